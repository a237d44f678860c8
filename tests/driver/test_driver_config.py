"""Config over REST, and starts refused while writers are missing (driver process)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.driver.fake_writer import FakeWriter
from tests.driver.harness import (
    DriverProcess,
    Producer,
    short_tmp_dir,
    unique_detector,
    wait_until,
    write_config,
)


@dataclass
class System:
    base: Path
    root: Path
    detector: str
    config_path: Path
    driver: DriverProcess
    producer: Producer
    writers: list[FakeWriter] = field(default_factory=list)

    def add_writer(self) -> FakeWriter:
        writer = FakeWriter(self.detector, str(self.base / "ipc"), len(self.writers))
        self.writers.append(writer)
        return writer


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    base = short_tmp_dir()
    root = base / "data"
    root.mkdir()
    detector = unique_detector()
    config = write_config(base, detector, rest_layer={"kept": True})
    producer = Producer(detector, base / "ipc")
    driver = DriverProcess(config, root)
    built = System(base, root, detector, config, driver, producer)
    try:
        yield built
    finally:
        status = driver.stop()
        for writer in built.writers:
            writer.close()
        producer.close()
        log = driver.log()
        shutil.rmtree(base, ignore_errors=True)
    assert status == 0, log


def test_a_start_without_running_writers_is_503_naming_them(system: System) -> None:
    response = system.driver.http.post("/start", json={"path": f"{system.root}/r"})
    assert response.status_code == 503
    assert "writer(s) [0] not running" in response.json()["detail"]
    system.add_writer()
    system.driver.wait_writers_alive()


def test_get_config(system: System) -> None:
    config = system.driver.http.get("/config").json()
    assert config["detector_name"] == system.detector
    assert config["number_of_writers"] == 1
    assert config["log_level"] == "info"  # defaults filled in


@pytest.mark.parametrize(
    ("change", "field_name"),
    [({"n_modules": 0}, "n_modules"), ({"bit_depth": 12}, "bit_depth"),
     ({"live_stream_configs": {"nonsense": {"type": "forward"}}}, "live_stream_configs")],
)
def test_an_invalid_config_is_422_naming_the_field(
    system: System, change: dict[str, object], field_name: str
) -> None:
    response = system.driver.http.patch("/config", json=change)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert any(field_name in item["loc"] for item in answer["detail"]), answer
    assert field_name in answer["message"]


def test_detector_name_type_and_ipc_dir_cannot_change(system: System) -> None:
    response = system.driver.http.patch("/config", json={"detector_name": "other"})
    assert response.status_code == 409
    assert "detector_name cannot be changed" in response.json()["detail"]
    response = system.driver.http.patch("/config", json={"ipc_dir": "/tmp"})
    assert response.status_code == 409
    assert "ipc_dir cannot be changed" in response.json()["detail"]
    whole = json.loads(system.config_path.read_text())
    whole["detector_type"] = "eiger"
    response = system.driver.http.put("/config", json=whole)
    assert response.status_code == 409
    assert "detector_type" in response.json()["detail"]
    for body in (b"[1, 2]", b"{oops"):
        response = system.driver.http.put(
            "/config", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert "JSON" in response.json()["detail"]
    assert json.loads(system.config_path.read_text())["detector_type"] == "pco"


def test_a_valid_change_is_saved_used_and_keeps_unknown_keys(system: System) -> None:
    response = system.driver.http.patch("/config", json={"writer_user_id": 4321})
    assert response.status_code == 200, response.text
    assert response.json()["saved_to"] == str(system.config_path)
    saved = json.loads(system.config_path.read_text())
    assert saved["writer_user_id"] == 4321
    assert saved["rest_layer"] == {"kept": True}
    assert "log_level" not in saved  # defaults stay out of the file
    assert system.driver.http.get("/config").json()["writer_user_id"] == 4321

    started = system.driver.http.post("/start", json={"path": f"{system.root}/uid"})
    assert started.status_code == 200
    acq_id = started.json()["acquisition_id"]
    system.driver.wait_for_state("waiting_for_first_image")
    assert system.writers[0].acquisition(acq_id).create["uid"] == 4321
    busy = system.driver.http.patch("/config", json={"writer_user_id": 1})
    assert busy.status_code == 409
    assert "during an acquisition" in busy.json()["detail"]
    assert system.driver.http.post("/stop").status_code == 202
    assert system.driver.wait_idle_after(acq_id)["outcome"] == "file_saved"


def test_more_writers_after_a_config_change(system: System) -> None:
    response = system.driver.http.patch("/config", json={"number_of_writers": 2})
    assert response.status_code == 200
    assert len(system.driver.status()["writers"]) == 2
    refused = system.driver.http.post("/start", json={"path": f"{system.root}/two"})
    assert refused.status_code == 503
    assert "[1]" in refused.json()["detail"]
    system.add_writer()
    system.driver.wait_writers_alive()
    started = system.driver.http.post(
        "/start", json={"path": f"{system.root}/two", "n_image": 4, "compression": "bitshuffle_lz4"}
    )
    assert started.status_code == 200, started.text
    acq_id = started.json()["acquisition_id"]
    assert started.json()["master_file"] == f"{system.root}/two/file.h5"
    system.driver.wait_for_state("waiting_for_first_image")
    system.producer.publish(1, 2, 3, 4)
    status = system.driver.wait_idle_after(acq_id)
    assert status["outcome"] == "file_saved"
    assert status["compression"] == "bitshuffle_lz4"
    assert [w.acquisition(acq_id).close for w in system.writers] == [
        {"acq_id": acq_id, "n_images": 2}, {"acq_id": acq_id, "n_images": 2},
    ]
    assert system.writers[0].acquisition(acq_id).create["compression"] == "bitshuffle_lz4"
    wait_until(lambda: system.writers[0].acquisition(acq_id).master, "master message")


def test_a_dead_writer_fails_the_acquisition_naming_it(system: System) -> None:
    assert len(system.writers) == 2
    started = system.driver.http.post("/start", json={"path": f"{system.root}/dead"})
    assert started.status_code == 200, started.text
    acq_id = started.json()["acquisition_id"]
    system.driver.wait_for_state("waiting_for_first_image")
    system.writers[1].close()  # the writer process "dies": its sockets are gone
    system.producer.publish(*range(100, 110))
    status = system.driver.wait_idle_after(acq_id)
    assert status["outcome"] == "error"
    assert "writer 1" in status["last_error"], status["last_error"]
    assert system.writers[0].acquisition(acq_id).close is not None  # its file was closed

    system.writers[1] = FakeWriter(system.detector, str(system.base / "ipc"), 1)
    system.driver.wait_writers_alive()
    started = system.driver.http.post("/start", json={"path": f"{system.root}/alive", "n_image": 2})
    assert started.status_code == 200, started.text
    system.driver.wait_for_state("waiting_for_first_image")
    system.producer.publish(200, 201)
    status = system.driver.wait_idle_after(started.json()["acquisition_id"])
    assert status["outcome"] == "file_saved", status["last_error"]
