"""What a user's tools see: strict input types on REST and the WebSocket (nothing is
converted, the field is named), std_daq's `start_id`, and WebSocket messages byte for byte
as std_daq's driver writes them. One driver process, one fake writer on real sockets."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from stddaq_driver.state import DaqState
from stddaq_driver.status_board import AcquisitionSnapshot
from stddaq_driver.ws_api import encode, status_message
from tests.driver.fake_writer import FakeWriter
from tests.driver.harness import (
    DEADLINE_S,
    DriverProcess,
    Producer,
    short_tmp_dir,
    unique_detector,
    write_config,
)

WRONG_TYPES: list[tuple[str, Any]] = [
    ("n_image", "100"),
    ("n_image", True),
    ("n_image", " 7 "),
    ("n_image", 1e9),
    ("n_image", 5.0),
    ("writer_id", "0"),
    ("writer_id", 1e9),
    ("writer_id", False),
    ("file_prefix", 7),
    ("path", ["/data"]),
    ("compression", 0),
    ("start_id", "0"),
]


@dataclass
class System:
    root: Path
    driver: DriverProcess
    writer: FakeWriter
    producer: Producer
    ids: Iterator[int]


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    base = short_tmp_dir()
    root = base / "data"
    root.mkdir()
    detector = unique_detector()
    config = write_config(base, detector, number_of_writers=1)
    producer = Producer(detector, base / "ipc")
    writer = FakeWriter(detector, str(base / "ipc"), 0)
    driver = DriverProcess(config, root)
    try:
        driver.wait_writers_alive()
        yield System(root, driver, writer, producer, itertools.count(1))
    finally:
        status = driver.stop()
        writer.close()
        producer.close()
        log = driver.log()
        shutil.rmtree(base, ignore_errors=True)
    assert status == 0, log


def raw_until(client: ClientConnection, wanted: str) -> list[str]:
    """Raw text messages up to and including the first equal to `wanted`."""
    seen: list[str] = []
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        message = client.recv(timeout=DEADLINE_S)
        assert isinstance(message, str)
        seen.append(message)
        if message == wanted:
            return seen
    raise AssertionError(f"no message {wanted!r} in {seen[-20:]}")


def answer_with(client: ClientConnection, status: str) -> dict[str, Any]:
    """The first message whose status is `status` (status pushes are skipped)."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        message = json.loads(client.recv(timeout=DEADLINE_S))
        if message["status"] == status:
            result: dict[str, Any] = message
            return result
    raise AssertionError(f"no {status} answer")


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES)
def test_rest_refuses_a_wrong_type_naming_the_field(
    system: System, field: str, value: Any
) -> None:
    body = {"path": f"{system.root}/strict", "n_image": 1, field: value}
    response = system.driver.http.post("/start", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [item["loc"] for item in detail] == [["body", field]]
    assert response.json()["message"].startswith(f"{field}: ")
    assert system.driver.status()["state"] == "idle"
    assert not (system.root / "strict").exists()


def test_websocket_refuses_each_wrong_type_naming_the_field(system: System) -> None:
    with connect(system.driver.ws_url) as client:
        for field, value in WRONG_TYPES:
            body = {"command": "start", "path": f"{system.root}/strict", "n_image": 1, field: value}
            client.send(json.dumps(body))
            error = answer_with(client, "error")
            assert error["reason"].startswith(f"{field}: "), (field, value, error)
    assert system.driver.status()["state"] == "idle"
    assert system.driver.http.get("/stats").json()["ws_bad_messages"] >= len(WRONG_TYPES)


@pytest.mark.parametrize(
    ("field", "value"),
    [("number_of_writers", "1"), ("number_of_writers", 1.0), ("writer_user_id", True),
     ("use_all_forwarders", "true"), ("stats_collection_period", "1"), ("bit_depth", 16.0)],
)
def test_config_changes_refuse_a_wrong_type_naming_the_field(
    system: System, field: str, value: Any
) -> None:
    before = system.driver.http.get("/config").json()
    response = system.driver.http.patch("/config", json={field: value})
    assert response.status_code == 422, response.text
    assert [item["loc"] for item in response.json()["detail"]] == [["body", field]]
    assert field in response.json()["message"]
    assert system.driver.http.get("/config").json() == before


def test_start_id_as_std_daq_documents_it(system: System) -> None:
    """std_daq's documented start (with writer_id and start_id 0) records; another
    start_id is refused naming the field, since stddaq cannot honour it."""
    with connect(system.driver.ws_url) as client:
        client.send(json.dumps({
            "command": "start", "path": f"{system.root}/sid", "n_image": 99,
            "writer_id": 7, "start_id": 5,
        }))
        error = answer_with(client, "error")
        assert error["reason"].startswith("start_id: ")
        assert "not supported" in error["reason"]
        client.send(json.dumps({
            "command": "start", "path": f"{system.root}/sid", "file_prefix": "x",
            "n_image": 2, "writer_id": 0, "start_id": 0,
        }))
        raw_until(client, '{"status":"waiting_for_first_image"}')
        system.producer.publish(next(system.ids), next(system.ids))
        raw_until(client, '{"count":2,"status":"file_saved"}')
        raw_until(client, '{"status":"idle"}')
    create = system.writer.acquisition(system.driver.status()["acquisition_id"]).create
    assert create["file"] == f"{system.root}/sid/x0.h5"
    assert create["uid"] == 0


def test_websocket_messages_are_std_daqs_bytes(system: System) -> None:
    """Every message is compact JSON with sorted keys, and `count` counts images dealt."""
    with connect(system.driver.ws_url) as client:
        assert client.recv(timeout=DEADLINE_S) == '{"status":"idle"}'
        client.send(json.dumps({"command": "start", "path": f"{system.root}/bytes", "n_image": 3}))
        before = raw_until(client, '{"status":"waiting_for_first_image"}')
        assert '{"status":"started"}' in before and '{"status":"creating_file"}' in before
        system.producer.publish(next(system.ids))
        raw_until(client, '{"count":1,"status":"recording"}')
        system.producer.publish(next(system.ids), next(system.ids))
        after = raw_until(client, '{"status":"idle"}')
        assert '{"count":3,"status":"file_saved"}' in after
        client.send(json.dumps({"command": "stop"}))
        rejected = raw_until(client, '{"reason":"no acquisition to stop (state idle)","status":"rejected"}')
        assert rejected
        client.send("{oops")
        error = client.recv(timeout=DEADLINE_S)
        while error == '{"status":"idle"}':
            error = client.recv(timeout=DEADLINE_S)
        assert error.startswith('{"reason":"the message is not valid JSON: ')
        assert error.endswith('","status":"error"}')
    for message in before + after:
        decoded = json.loads(message)
        assert message == json.dumps(decoded, sort_keys=True, separators=(",", ":"))


def test_extras_only_for_clients_that_ask(system: System) -> None:
    with connect(f"{system.driver.ws_url}/?extras=1") as client:
        first = json.loads(client.recv(timeout=DEADLINE_S))
        assert first["status"] == "idle"
        assert {"acquisition_id", "images_written", "images_missing"} <= set(first)


def test_std_daqs_documented_examples_byte_for_byte() -> None:
    """The examples of std_daq's driver documentation, from snapshots of those states."""
    recording = AcquisitionSnapshot(state=DaqState.RECORDING)
    assert encode(status_message(recording)) == '{"count":0,"status":"recording"}'
    assert encode(status_message(AcquisitionSnapshot(state=DaqState.IDLE))) == '{"status":"idle"}'
    assert encode({"status": "rejected", "reason": "busy"}) == '{"reason":"busy","status":"rejected"}'
