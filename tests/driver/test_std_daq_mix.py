"""Mixed deployments, all real processes: the stddaq driver with std_daq writers, std_daq's
driver with stddaq writers (peers of tests/driver/std_daq_peers.py, written from the spec),
each recording, stopping and failing; files read back pixel-exact. Also: a name served by
a live process is never taken over.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

from stddaq_common.bus.driver_writer import driver_address, writer_address
from stddaq_common.bus.metadata_stream import ipc_file_of
from stddaq_common.config.model import load_config
from stddaq_common.names import shm_name
from stddaq_common.ring.geometry import ring_geometry
from stddaq_common.ring.image_ring import ImageRing
from tests.driver.harness import (
    DEADLINE_S,
    DriverProcess,
    Producer,
    free_port,
    short_tmp_dir,
    unique_detector,
    wait_until,
    write_config,
)

HEIGHT, WIDTH = 32, 48
REPO = Path(__file__).resolve().parents[2]


def frame(image_id: int) -> np.ndarray:
    """A frame whose every pixel depends on its id (pixel-exact checks)."""
    base = np.arange(HEIGHT * WIDTH, dtype=np.uint32).reshape(HEIGHT, WIDTH)
    return ((base * 5 + image_id * 17) % 65519).astype(np.uint16)


def _env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("STDDAQ_")}


def _read_ready(process: subprocess.Popen[bytes], what: str) -> None:
    assert process.stdout is not None
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end and process.poll() is None:
        readable, _, _ = select.select([process.stdout], [], [], 0.2)
        if readable and process.stdout.readline().startswith(b"READY"):
            return
    raise AssertionError(f"{what} did not get ready (exit status {process.poll()})")


def _stop(process: subprocess.Popen[bytes]) -> int | None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(DEADLINE_S)
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


@dataclass
class Mix:
    base: Path
    root: Path
    detector: str
    config_path: Path
    ring: ImageRing
    producer: Producer
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    next_id: int = 1

    def produce(self, count: int) -> list[int]:
        """Write `count` frames into the ring and publish them; the ids."""
        ids = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        for image_id in ids:
            self.ring.write(image_id, frame(image_id))
            self.producer.publish(image_id)
        return ids

    def peer(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a std_daq peer process (READY awaited)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.driver.std_daq_peers", role, str(self.config_path), *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=open(self.base / f"peer-{role}.log", "ab"),  # noqa: SIM115
            env=_env(),
        )
        self.processes.append(process)
        _read_ready(process, f"peer {role}")
        return process

    def stddaq_writer(self, index: int) -> subprocess.Popen[bytes]:
        """Start stddaq writer `index` (READY awaited)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "stddaq_writer", str(self.config_path), "--index", str(index),
             "--disk-reserve-mb", "1"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=open(self.base / f"writer{index}.log", "ab"),  # noqa: SIM115
            env=_env(),
        )
        self.processes.append(process)
        _read_ready(process, f"stddaq writer {index}")
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            _stop(process)
        self.producer.close()
        self.ring.close()
        shutil.rmtree(self.base, ignore_errors=True)


def _mix(n_writers: int) -> Mix:
    base = short_tmp_dir()
    root = base / "data"
    root.mkdir()
    detector = unique_detector()
    config_path = write_config(
        base, detector, number_of_writers=n_writers, image_pixel_height=HEIGHT,
        image_pixel_width=WIDTH,
    )
    ring = ImageRing.create(shm_name(detector), ring_geometry(load_config(config_path)))
    producer = Producer(detector, base / "ipc", HEIGHT, WIDTH)
    return Mix(base, root, detector, config_path, ring, producer)


def check_file(path: str | Path, detector: str, ids: list[int]) -> None:
    """`path` holds exactly the frames of `ids`, in this order, and their ids."""
    with h5py.File(path, "r") as file:
        data = file[f"/{detector}/data"]
        assert data.shape == (len(ids), HEIGHT, WIDTH)
        assert list(file[f"/{detector}/metadata"]["image_id"]) == ids
        for position, image_id in enumerate(ids):
            np.testing.assert_array_equal(data[position], frame(image_id))


def ws_until(client: ClientConnection, status: str) -> list[dict[str, Any]]:
    """Messages until one with `status` (AssertionError at the deadline)."""
    seen: list[dict[str, Any]] = []
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        message = json.loads(client.recv(timeout=DEADLINE_S))
        seen.append(message)
        if message.get("status") == status:
            return seen
    raise AssertionError(f"no {status!r} in {seen[-10:]}")


# ----------------------------------------------------- the stddaq driver, std_daq writers


@pytest.fixture(scope="module")
def under_stddaq() -> Iterator[tuple[Mix, DriverProcess]]:
    """The stddaq driver and one std_daq peer writer."""
    mix = _mix(1)
    driver: DriverProcess | None = None
    try:
        mix.peer("writer", "0")
        driver = DriverProcess(mix.config_path, mix.root)
        driver.wait_writers_alive()
        yield mix, driver
    finally:
        status = driver.stop() if driver is not None else 0
        mix.close()
        assert status == 0


def test_stddaq_driver_records_and_stops_with_a_std_daq_writer_over_rest(
    under_stddaq: tuple[Mix, DriverProcess],
) -> None:
    mix, driver = under_stddaq
    (mix.root / "rest").mkdir()
    started = driver.http.post("/start", json={"path": f"{mix.root}/rest", "n_image": 5})
    assert started.status_code == 200, started.text
    driver.wait_for_state("waiting_for_first_image")
    ids = mix.produce(5)
    status = driver.wait_idle_after(started.json()["acquisition_id"])
    assert status["outcome"] == "file_saved", status["last_error"]
    assert status["images_written"] == 5  # what the driver dealt: a std_daq writer has no counts
    check_file(mix.root / "rest" / "file0.h5", mix.detector, ids)

    started = driver.http.post("/start", json={"path": f"{mix.root}/rest", "file_prefix": "stop"})
    acq_id = started.json()["acquisition_id"]
    driver.wait_for_state("waiting_for_first_image")
    ids = mix.produce(3)
    wait_until(lambda: driver.status()["images_dealt"] == 3, "3 images dealt")
    assert driver.http.post("/stop").status_code == 202
    assert driver.wait_idle_after(acq_id)["outcome"] == "file_saved"
    check_file(mix.root / "rest" / "stop0.h5", mix.detector, ids)


def test_stddaq_driver_records_and_stops_with_a_std_daq_writer_over_the_websocket(
    under_stddaq: tuple[Mix, DriverProcess],
) -> None:
    mix, driver = under_stddaq
    (mix.root / "ws").mkdir()
    with connect(driver.ws_url) as client:
        client.send(json.dumps({"command": "start", "path": f"{mix.root}/ws", "n_image": 4}))
        ws_until(client, "waiting_for_first_image")
        ids = mix.produce(4)
        assert ws_until(client, "file_saved")[-1]["count"] == 4
        ws_until(client, "idle")
        check_file(mix.root / "ws" / "file0.h5", mix.detector, ids)

        client.send(json.dumps({"command": "start", "path": f"{mix.root}/ws", "file_prefix": "s"}))
        ws_until(client, "waiting_for_first_image")
        ids = mix.produce(2)
        ws_until(client, "recording")
        wait_until(lambda: driver.status()["images_dealt"] == 2, "2 images dealt")
        client.send(json.dumps({"command": "stop"}))
        ws_until(client, "file_saved")
    check_file(mix.root / "ws" / "s0.h5", mix.detector, ids)


def test_a_std_daq_writer_answering_failure_fails_the_acquisition_over_rest_and_websocket() -> None:
    mix = _mix(1)
    driver: DriverProcess | None = None
    try:
        mix.peer("writer", "0", "--fail-create", "the disk is on fire")
        driver = DriverProcess(mix.config_path, mix.root)
        driver.wait_writers_alive()
        started = driver.http.post("/start", json={"path": str(mix.root)})
        status = driver.wait_idle_after(started.json()["acquisition_id"])
        assert status["outcome"] == "error"
        assert "writer 0: the disk is on fire" in status["last_error"]
        driver.wait_writers_alive()
        with connect(driver.ws_url) as client:
            client.send(json.dumps({"command": "start", "path": str(mix.root)}))
            error = ws_until(client, "error")[-1]
            assert "writer 0: the disk is on fire" in error["reason"]
            ws_until(client, "idle")
    finally:
        assert (driver.stop() if driver is not None else 0) == 0
        mix.close()


def test_a_stddaq_and_a_std_daq_writer_under_the_stddaq_driver_with_the_master_file() -> None:
    mix = _mix(2)
    driver: DriverProcess | None = None
    try:
        mix.stddaq_writer(0)
        mix.peer("writer", "1")
        driver = DriverProcess(mix.config_path, mix.root)
        driver.wait_writers_alive()
        started = driver.http.post("/start", json={"path": str(mix.root), "n_image": 7})
        driver.wait_for_state("waiting_for_first_image")
        ids = mix.produce(7)
        status = driver.wait_idle_after(started.json()["acquisition_id"])
        assert status["outcome"] == "file_saved", status["last_error"]
        check_file(mix.root / "file0.h5", mix.detector, ids[0::2])
        check_file(mix.root / "file1.h5", mix.detector, ids[1::2])
        with h5py.File(mix.root / "file.h5", "r") as master:
            data = master[f"/{mix.detector}/data"]
            assert data.shape == (7, HEIGHT, WIDTH)
            for position, image_id in enumerate(ids):
                np.testing.assert_array_equal(data[position], frame(image_id))
    finally:
        assert (driver.stop() if driver is not None else 0) == 0
        mix.close()


def test_two_std_daq_writers_under_the_stddaq_driver_and_the_master_file_it_builds() -> None:
    mix = _mix(2)
    driver: DriverProcess | None = None
    try:
        mix.peer("writer", "0")
        mix.peer("writer", "1")
        driver = DriverProcess(mix.config_path, mix.root)
        driver.wait_writers_alive()
        started = driver.http.post("/start", json={"path": str(mix.root), "n_image": 5})
        driver.wait_for_state("waiting_for_first_image")
        ids = mix.produce(5)
        status = driver.wait_idle_after(started.json()["acquisition_id"])
        assert status["outcome"] == "file_saved", status["last_error"]
        check_file(mix.root / "file0.h5", mix.detector, ids[0::2])
        check_file(mix.root / "file1.h5", mix.detector, ids[1::2])
        with h5py.File(mix.root / "file.h5", "r") as master:
            data = master[f"/{mix.detector}/data"]
            assert data.shape == (5, HEIGHT, WIDTH)
            for position, image_id in enumerate(ids):
                np.testing.assert_array_equal(data[position], frame(image_id))
    finally:
        assert (driver.stop() if driver is not None else 0) == 0
        mix.close()


def test_a_dead_std_daq_writer_fails_the_acquisition_naming_it() -> None:
    """No heartbeats from a std_daq writer: the driver sees it dead when its answer does
    not come (or the message cannot be delivered), never waits forever."""
    mix = _mix(1)
    driver: DriverProcess | None = None
    try:
        peer = mix.peer("writer", "0")
        driver = DriverProcess(mix.config_path, mix.root)
        driver.wait_writers_alive()
        started = driver.http.post("/start", json={"path": str(mix.root)})
        driver.wait_for_state("waiting_for_first_image")
        mix.produce(2)
        wait_until(lambda: driver.status()["images_dealt"] == 2, "2 images dealt")
        os.kill(peer.pid, signal.SIGKILL)
        peer.wait(DEADLINE_S)
        assert driver.http.post("/stop").status_code == 202
        status = driver.wait_idle_after(started.json()["acquisition_id"])
        assert status["outcome"] == "error"
        assert "writer 0" in status["last_error"], status["last_error"]
    finally:
        assert (driver.stop() if driver is not None else 0) == 0
        mix.close()


# ----------------------------------------------------- std_daq's driver, stddaq writers


@pytest.fixture(scope="module")
def under_std_daq() -> Iterator[tuple[Mix, str]]:
    """std_daq's driver (peer) and two stddaq writers; the WebSocket URL."""
    mix = _mix(2)
    try:
        mix.stddaq_writer(0)
        mix.stddaq_writer(1)
        port = free_port()
        mix.peer("driver", "--ws-port", str(port))
        yield mix, f"ws://127.0.0.1:{port}"
    finally:
        mix.close()


def test_std_daq_driver_records_with_stddaq_writers(under_std_daq: tuple[Mix, str]) -> None:
    mix, url = under_std_daq
    with connect(url) as client:
        client.send(json.dumps({
            "command": "start", "path": str(mix.root), "file_prefix": "run", "n_image": 6,
            "writer_id": os.getuid(),
        }))
        ws_until(client, "waiting_for_first_image")
        ids = mix.produce(6)
        assert ws_until(client, "file_saved")[-1]["count"] == 6
    check_file(mix.root / "run0.h5", mix.detector, ids[0::2])  # in the order received
    check_file(mix.root / "run1.h5", mix.detector, ids[1::2])


def test_std_daq_driver_stops_stddaq_writers(under_std_daq: tuple[Mix, str]) -> None:
    mix, url = under_std_daq
    with connect(url) as client:
        client.send(json.dumps({"command": "start", "path": str(mix.root), "file_prefix": "stop"}))
        ws_until(client, "waiting_for_first_image")
        ids = mix.produce(3)
        wait_until(lambda: ws_until(client, "recording")[-1].get("count") == 3 or None,
                   "3 images dealt")
        client.send(json.dumps({"command": "stop"}))
        assert ws_until(client, "file_saved")[-1]["count"] == 3
        ws_until(client, "idle")
    check_file(mix.root / "stop0.h5", mix.detector, ids[0::2])
    check_file(mix.root / "stop1.h5", mix.detector, ids[1::2])


def test_a_stddaq_writer_answers_std_daq_driver_failure(under_std_daq: tuple[Mix, str]) -> None:
    mix, url = under_std_daq
    (mix.root / "plain").write_bytes(b"not a directory")
    with connect(url) as client:
        client.send(json.dumps({"command": "start", "path": f"{mix.root}/plain/sub"}))
        error = ws_until(client, "error")[-1]
        assert "Not a directory" in error["reason"], error
        ws_until(client, "idle")
        # ...and the writers serve the next acquisition.
        client.send(json.dumps({"command": "start", "path": str(mix.root), "file_prefix": "after",
                                "n_image": 2}))
        ws_until(client, "waiting_for_first_image")
        ids = mix.produce(2)
        ws_until(client, "file_saved")
    check_file(mix.root / "after0.h5", mix.detector, ids[:1])
    check_file(mix.root / "after1.h5", mix.detector, ids[1:])


# ----------------------------------------------------- names served by a live process


def test_a_live_std_daq_writer_on_d_writer_0_makes_the_stddaq_writer_refuse() -> None:
    mix = _mix(1)
    try:
        mix.peer("writer", "0")
        socket_file = ipc_file_of(writer_address(mix.detector, 0, str(mix.base / "ipc")))
        assert socket_file is not None and os.path.exists(socket_file)
        refused = subprocess.run(
            [sys.executable, "-m", "stddaq_writer", str(mix.config_path), "--index", "0"],
            cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S, env=_env(),
        )
        assert refused.returncode != 0
        assert socket_file in refused.stderr and "std_daq_peers writer" in refused.stderr
        assert os.path.exists(socket_file)  # still the peer's
    finally:
        mix.close()


def test_a_live_std_daq_driver_on_d_driver_0_makes_the_stddaq_driver_refuse() -> None:
    mix = _mix(1)
    try:
        mix.peer("driver", "--ws-port", str(free_port()))
        socket_file = ipc_file_of(driver_address(mix.detector, 0, str(mix.base / "ipc")))
        assert socket_file is not None and os.path.exists(socket_file)
        with pytest.raises(AssertionError, match="did not get ready"):
            DriverProcess(mix.config_path, mix.root)
        log = (mix.config_path.parent / "driver.log").read_text()
        assert socket_file in log and "std_daq_peers driver" in log
        assert os.path.exists(socket_file)
    finally:
        mix.close()
