"""std_daq's WebSocket protocol against the driver process (with a token), two fake writers."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.driver.fake_writer import FakeWriter
from tests.driver.harness import (
    DEADLINE_S,
    DriverProcess,
    Producer,
    short_tmp_dir,
    unique_detector,
    write_config,
)

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HAPPY_PATH = [
    "started", "creating_file", "file_created", "waiting_for_first_image", "recording",
    "saving_file", "file_saved", "idle",
]


@dataclass
class System:
    root: Path
    driver: DriverProcess
    writers: list[FakeWriter]
    producer: Producer
    ids: Iterator[int]


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    base = short_tmp_dir()
    root = base / "data"
    root.mkdir()
    detector = unique_detector()
    config = write_config(base, detector, number_of_writers=2)
    producer = Producer(detector, base / "ipc")
    writers = [FakeWriter(detector, str(base / "ipc"), k) for k in range(2)]
    driver = DriverProcess(config, root, token=TOKEN)
    try:
        driver.wait_writers_alive()
        yield System(root, driver, writers, producer, itertools.count(1))
    finally:
        status = driver.stop()
        for writer in writers:
            writer.close()
        producer.close()
        log = driver.log()
        shutil.rmtree(base, ignore_errors=True)
    assert status == 0, log


def receive(client: ClientConnection) -> dict[str, Any]:
    message = client.recv(timeout=DEADLINE_S)
    result: dict[str, Any] = json.loads(message)
    return result


def receive_until(client: ClientConnection, wanted: dict[str, Any]) -> list[dict[str, Any]]:
    """Messages up to and including the first one containing every item of `wanted`."""
    seen = []
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        message = receive(client)
        seen.append(message)
        if all(message.get(key) == value for key, value in wanted.items()):
            return seen
    raise AssertionError(f"no message with {wanted} in {seen[-20:]}")


def distinct_states(messages: list[dict[str, Any]]) -> list[str]:
    states: list[str] = []
    for message in messages:
        if message.get("status") and (not states or states[-1] != message["status"]):
            states.append(message["status"])
    return states


def test_a_whole_acquisition_with_upstream_messages(system: System) -> None:
    with connect(system.driver.ws_url, additional_headers=AUTH) as client, \
            connect(f"{system.driver.ws_url}/?token={TOKEN}") as watcher:
        assert receive(client)["status"] == "idle"
        assert receive(watcher)["status"] == "idle"
        client.send(json.dumps({
            "command": "start", "path": f"{system.root}/ws_run", "file_prefix": "ws",
            "n_image": 5, "writer_id": os.getuid(),
        }))
        before_images = receive_until(client, {"status": "waiting_for_first_image"})
        system.producer.publish(*[next(system.ids) for _ in range(5)])
        rest = receive_until(client, {"status": "idle"})
        watched = receive_until(watcher, {"status": "idle"})
        watched_after_start = watched[[m["status"] for m in watched].index("started"):]

    messages = before_images + rest
    states = distinct_states(messages)
    assert states[states.index("started"):] == HAPPY_PATH
    assert distinct_states(watched_after_start) == HAPPY_PATH
    saved = next(message for message in messages if message["status"] == "file_saved")
    assert saved["count"] == 5
    recording = [message for message in messages if message["status"] == "recording"]
    assert all(isinstance(message["count"], int) for message in recording)
    create = system.writers[0].acquisition(1).create
    assert create["uid"] == os.getuid()
    assert create["file"] == f"{system.root}/ws_run/ws0.h5"


def test_bad_json_and_start_while_busy_and_stop(system: System) -> None:
    with connect(system.driver.ws_url, additional_headers=AUTH) as client:
        client.send("{this is not json")
        error = receive_until(client, {"status": "error"})[-1]
        assert "not valid JSON" in error["reason"]
        client.send(json.dumps({"command": "dance"}))
        assert "'command'" in receive_until(client, {"status": "error"})[-1]["reason"]
        client.send(json.dumps({"command": "start", "path": f"{system.root}/x", "n_image": -3}))
        assert "n_image" in receive_until(client, {"status": "error"})[-1]["reason"]
        assert system.driver.status()["state"] == "idle"

        client.send(json.dumps({"command": "start", "path": f"{system.root}/ws_busy"}))
        receive_until(client, {"status": "waiting_for_first_image"})
        client.send(json.dumps({"command": "start", "path": f"{system.root}/ws_other"}))
        rejected = receive_until(client, {"status": "rejected"})[-1]
        assert "running" in rejected["reason"]
        system.producer.publish(*[next(system.ids) for _ in range(3)])
        receive_until(client, {"status": "recording", "count": 3})
        client.send(json.dumps({"command": "stop"}))
        messages = receive_until(client, {"status": "idle"})
        assert {"stop", "saving_file", "file_saved"} <= set(distinct_states(messages))
        assert next(m for m in messages if m["status"] == "file_saved")["count"] == 3

        client.send(json.dumps({"command": "start", "path": "/etc/ws"}))
        assert "outside the allowed roots" in receive_until(client, {"status": "rejected"})[-1][
            "reason"
        ]


def test_a_writer_error_reaches_every_client_with_its_reason(system: System) -> None:
    system.writers[0].fail_after_images = (1, "No space left on device")
    with connect(system.driver.ws_url, additional_headers=AUTH) as client:
        client.send(json.dumps({"command": "start", "path": f"{system.root}/ws_full"}))
        receive_until(client, {"status": "waiting_for_first_image"})
        system.producer.publish(*[next(system.ids) for _ in range(4)])
        messages = receive_until(client, {"status": "idle"})
    error = next(message for message in messages if message["status"] == "error")
    assert error["reason"] == "writer 0: No space left on device"


def test_state_changes_need_the_token(system: System) -> None:
    with connect(system.driver.ws_url) as anonymous:
        assert receive(anonymous)["status"] == "idle"  # the status is public
        anonymous.send(json.dumps({"command": "start", "path": f"{system.root}/anon"}))
        rejected = receive_until(anonymous, {"status": "rejected"})[-1]
        assert "token" in rejected["reason"]
    assert system.driver.http.post("/start", json={"path": f"{system.root}/anon"}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert system.driver.http.post("/stop", headers=wrong).status_code == 401
    assert system.driver.http.patch("/config", json={}, headers=wrong).status_code == 401
    assert system.driver.http.get("/status").status_code == 200
    assert not (system.root / "anon").exists()
    assert system.driver.http.get("/stats").json()["auth_refused"] >= 4
    response = system.driver.http.post(
        "/start", json={"path": f"{system.root}/authed", "n_image": 1}, headers=AUTH
    )
    assert response.status_code == 200
    acq_id = response.json()["acquisition_id"]
    system.driver.wait_for_state("waiting_for_first_image")
    system.producer.publish(next(system.ids))
    assert system.driver.wait_idle_after(acq_id)["outcome"] == "file_saved"
