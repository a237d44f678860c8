"""The driver process over REST, with three fake writers on real ZeroMQ sockets.

One driver for the whole module; every test leaves it idle.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.driver.fake_writer import FakeWriter
from tests.driver.harness import (
    DriverProcess,
    Producer,
    free_port,
    short_tmp_dir,
    unique_detector,
    wait_until,
    write_config,
)

N_WRITERS = 3


@dataclass
class System:
    base: Path
    root: Path
    driver: DriverProcess
    writers: list[FakeWriter]
    producer: Producer
    ids: Iterator[int]

    def start(self, **body: Any) -> dict[str, Any]:
        response = self.driver.http.post("/start", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def next_ids(self, count: int) -> list[int]:
        return [next(self.ids) for _ in range(count)]

    def acquisitions_seen(self) -> int:
        return sum(len(writer.acquisitions) for writer in self.writers)


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    base = short_tmp_dir()
    root = base / "data"
    root.mkdir()
    detector = unique_detector()
    config = write_config(base, detector, number_of_writers=N_WRITERS)
    producer = Producer(detector, base / "ipc")
    writers = [FakeWriter(detector, str(base / "ipc"), k) for k in range(N_WRITERS)]
    driver = DriverProcess(config, root, extra_args=["--metrics-port", "0"])
    try:
        driver.wait_writers_alive()
        yield System(base, root, driver, writers, producer, itertools.count(1000))
    finally:
        status = driver.stop()
        for writer in writers:
            writer.close()
        producer.close()
        log = driver.log()
        shutil.rmtree(base, ignore_errors=True)
    assert status == 0, log
    assert all(not writer.protocol_errors for writer in writers)


def test_n_image_reached_with_a_gap_in_the_ids(system: System) -> None:
    started = system.start(path=f"{system.root}/run1", file_prefix="scan", n_image=10)
    acq_id = started["acquisition_id"]
    assert started["files"] == [f"{system.root}/run1/scan{k}.h5" for k in range(N_WRITERS)]
    assert started["master_file"] == f"{system.root}/run1/scan.h5"
    system.driver.wait_for_state("waiting_for_first_image", "recording")
    ids = system.next_ids(16)
    published = ids[:5] + ids[6:]  # ids[5] is never published: a gap
    system.producer.publish(*published)
    status = system.driver.wait_idle_after(acq_id)

    assert status["outcome"] == "file_saved", status
    assert status["last_error"] is None
    # The producer serves the metadata socket, as the receiver would; every writer is heard.
    assert status["down"] == [] and status["receiver"]["alive"] is True, status["receiver"]
    assert status["receiver"]["seconds_since_metadata"] is not None
    health = system.driver.http.get("/health").json()
    assert (health["down"], health["silent_writers"]) == ([], [])
    dealt = published[:10]
    assert (status["images_dealt"], status["images_written"]) == (10, 10)
    assert (status["id_gaps"], status["images_missing"]) == (1, 1)
    assert (status["first_image_id"], status["last_image_id"]) == (dealt[0], dealt[-1])
    for k, writer in enumerate(system.writers):
        acquisition = writer.acquisition(acq_id)
        assert acquisition.create["file"] == f"{system.root}/run1/scan{k}.h5"
        assert acquisition.create["writer_index"] == k
        assert acquisition.create["n_writers"] == N_WRITERS
        assert acquisition.create["config"]["detector_name"].startswith("drvtest")
        expected = [(j // N_WRITERS, image_id) for j, image_id in enumerate(dealt)][k::N_WRITERS]
        assert acquisition.images == expected
        assert acquisition.close == {"acq_id": acq_id, "n_images": len(expected)}
    master = system.writers[0].acquisition(acq_id).master
    assert master == {
        "acq_id": acq_id,
        "file": f"{system.root}/run1/scan.h5",
        "files": [f"{system.root}/run1/scan{k}.h5" for k in range(N_WRITERS)],
        "n_images": 10,
        "images_per_file": [4, 3, 3],
        "detector": system.writers[0].acquisition(acq_id).create["config"]["detector_name"],
    }
    assert all(writer.acquisition(acq_id).master is None for writer in system.writers[1:])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"path": "{root}/x", "n_image": 0}, "n_image"),
        ({"path": "{root}/x", "n_image": "many"}, "n_image"),
        ({"path": "relative/x"}, "path"),
        ({"path": "{root}/a/../b"}, "path"),
        ({"path": "{root}/x", "compression": "zip"}, "compression"),
        ({"path": "{root}/x", "n_images": 5}, "n_images"),
        ({"path": "{root}/x", "file_prefix": "a/b"}, "file_prefix"),
        ({"path": "{root}/x", "writer_id": -1}, "writer_id"),
        ({}, "path"),
    ],
)
def test_a_bad_body_is_422_naming_the_field(
    system: System, body: dict[str, Any], field: str
) -> None:
    before = system.acquisitions_seen()
    sent = {key: value.format(root=system.root) if isinstance(value, str) else value
            for key, value in body.items()}
    response = system.driver.http.post("/start", json=sent)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert any(item["loc"][-1] == field for item in answer["detail"]), answer
    assert field in answer["message"]
    assert system.driver.status()["state"] == "idle"
    assert system.acquisitions_seen() == before


def test_a_body_that_is_not_json_is_422(system: System) -> None:
    response = system.driver.http.post(
        "/start", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["message"]
    assert system.driver.http.get("/stats").json()["requests_invalid"] >= 1


def test_a_huge_body_is_413(system: System) -> None:
    response = system.driver.http.post(
        "/start", content=b" " * (2 << 20), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_a_path_outside_the_roots_is_refused_before_anything_is_created(system: System) -> None:
    before = system.acquisitions_seen()
    outside = system.base / "outside" / "run"
    response = system.driver.http.post("/start", json={"path": str(outside)})
    assert response.status_code == 403
    assert str(outside) in response.json()["detail"]
    assert str(system.root) in response.json()["detail"]
    os.symlink(system.base, system.root / "escape")
    response = system.driver.http.post("/start", json={"path": f"{system.root}/escape/run"})
    assert response.status_code == 403
    assert "symbolic link" in response.json()["detail"]
    assert not (system.base / "outside").exists()
    assert system.acquisitions_seen() == before
    assert system.driver.status()["state"] == "idle"


def test_an_existing_file_is_never_overwritten(system: System) -> None:
    (system.root / "old").mkdir()
    (system.root / "old" / "file1.h5").write_bytes(b"precious")
    response = system.driver.http.post("/start", json={"path": f"{system.root}/old"})
    assert response.status_code == 409
    assert "file1.h5 already exists" in response.json()["detail"]
    assert (system.root / "old" / "file1.h5").read_bytes() == b"precious"


def test_second_start_is_409_and_stop_mid_run_keeps_what_was_dealt(system: System) -> None:
    started = system.start(path=f"{system.root}/run2")
    acq_id = started["acquisition_id"]
    second = system.driver.http.post("/start", json={"path": f"{system.root}/run3"})
    assert second.status_code == 409
    assert "running" in second.json()["detail"]
    system.driver.wait_for_state("waiting_for_first_image")
    system.producer.publish(*system.next_ids(7))
    wait_until(lambda: system.driver.status()["images_dealt"] == 7, "7 images dealt")
    stop = system.driver.http.post("/stop")
    assert stop.status_code == 202
    status = system.driver.wait_idle_after(acq_id)
    assert status["outcome"] == "file_saved"
    assert (status["images_dealt"], status["images_written"]) == (7, 7)
    closes = [writer.acquisition(acq_id).close for writer in system.writers]
    assert [close["n_images"] for close in closes if close] == [3, 2, 2]
    again = system.driver.http.post("/stop")
    assert again.status_code == 409
    assert "no acquisition to stop" in again.json()["detail"]


def test_writer_error_goes_to_error_with_the_reason_and_the_next_acquisition_works(
    system: System,
) -> None:
    system.writers[1].fail_after_images = (2, "No space left on device")
    started = system.start(path=f"{system.root}/full")
    acq_id = started["acquisition_id"]
    system.driver.wait_for_state("waiting_for_first_image")
    system.producer.publish(*system.next_ids(9))
    status = system.driver.wait_idle_after(acq_id)
    assert status["outcome"] == "error"
    assert status["last_error"] == "writer 1: No space left on device"
    assert status["writers"][1]["last_error"] == "No space left on device"
    assert system.writers[0].acquisition(acq_id).close is not None
    assert system.writers[2].acquisition(acq_id).close is not None
    assert system.writers[1].acquisition(acq_id).close is None

    system.writers[2].fail_create = "cannot create file: directory does not exist"
    failed_create = system.start(path=f"{system.root}/missing")["acquisition_id"]
    status = system.driver.wait_idle_after(failed_create)
    assert status["outcome"] == "error"
    assert "writer 2: cannot create file" in status["last_error"]

    next_id = system.start(path=f"{system.root}/after", n_image=3)["acquisition_id"]
    assert system.driver.status()["last_error"] is None  # cleared by the start
    system.driver.wait_for_state("waiting_for_first_image")
    system.producer.publish(*system.next_ids(3))
    status = system.driver.wait_idle_after(next_id)
    assert status["outcome"] == "file_saved"
    assert status["images_written"] == 3
    stats = system.driver.http.get("/stats").json()
    assert stats["acquisitions_failed"] >= 2
    assert stats["acquisitions_saved"] >= 1


def test_stats_and_prometheus_metrics(system: System) -> None:
    stats = system.driver.http.get("/stats").json()
    for name in ("images_dealt", "images_written", "bytes_written", "write_latency_s",
                 "write_throughput_bytes_per_s", "paths_refused", "starts_refused_busy"):
        assert name in stats
    port = int(system.driver.ready_line.split("metrics_port=")[1].split()[0])
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    assert "stddaq_driver_images_dealt_total" in metrics
    assert "stddaq_driver_bytes_written_total" in metrics


def test_openapi_is_served(system: System) -> None:
    response = httpx.get(f"http://127.0.0.1:{system.driver.rest_port}/openapi.json", timeout=30)
    assert response.status_code == 200
    assert "/api/v1/start" in response.json()["paths"]


@pytest.mark.parametrize(("option", "what"), [("--rest-port", "REST API"), ("--ws-port", "WebSocket")])
def test_a_port_in_use_is_a_startup_error_naming_it(option: str, what: str) -> None:
    base = short_tmp_dir()
    try:
        config = write_config(base, unique_detector())
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen(1)
            taken = holder.getsockname()[1]
            other = "--ws-port" if option == "--rest-port" else "--rest-port"
            process = subprocess.run(
                [sys.executable, "-m", "stddaq_driver", str(config), "--allowed-root", str(base),
                 option, str(taken), other, str(free_port())],
                capture_output=True, text=True, timeout=60,
                env={k: v for k, v in os.environ.items() if not k.startswith("STDDAQ_")},
            )
        assert process.returncode == 1
        assert f"{what}: cannot listen on 127.0.0.1:{taken}" in process.stderr, process.stderr
        assert "Traceback" not in process.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)
