"""stddaq's readers on a ring that a std_daq service made, tested as std_daq tests its own.

The test plays std_daq's receiver: it creates `/dev/shm/<D>-image` itself with Python's
`multiprocessing.shared_memory` at std_daq's size (no stddaq companion segment), writes
the image into its slot, and binds the metadata PUB at `ipc:///tmp/<D>-image`. stddaq's
live stream (and a writer under the stddaq driver) must read that ring as std_daq's
readers do, and say that this ring cannot prove an image was not overwritten while read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import Any

import h5py
import httpx
import numpy as np
import numpy.typing as npt
import pytest
import zmq

from stddaq_common.bus.metadata import Dtype, GfInfo, ImageMeta, Status, encode_image_metadata
from stddaq_common.testing.processes import wait_until as shared_wait_until
from tests.live_stream.rig import free_tcp_port

DEADLINE_S = 30.0
"""Generous bound on any single wait; never an assertion about speed."""

HEIGHT = WIDTH = 2016
SLOT_BYTES = HEIGHT * WIDTH * 2  # gigafrost: 16-bit pixels
TWO_MIB = 2 * 1024 * 1024
STD_DAQ_SIZE = -(-max(1000, 0) * SLOT_BYTES // TWO_MIB) * TWO_MIB
"""std_daq's ring: max(1000, 0 GiB / slot) slots, rounded up to 2 MiB (spec section 4)."""

EXPECTED_HEADER = b'{"htype":"array-1.0", "shape":[2016,2016], "type":"uint16", "frame":3}'


def pixels_of(image_id: int) -> npt.NDArray[np.uint16]:
    """An image whose every pixel depends on its id and position."""
    index = np.arange(HEIGHT * WIDTH, dtype=np.uint32)
    return ((index * 2654435761 + image_id * 40503) >> 7).astype(np.uint16).reshape(HEIGHT, WIDTH)


def gigafrost_config(detector: str, stream_address: str, **extra: Any) -> dict[str, Any]:
    """A config as a std_daq gigafrost deployment writes it (default ipc dir /tmp)."""
    return {
        "detector_name": detector,
        "detector_type": "gigafrost",
        "n_modules": 8,
        "bit_depth": 16,
        "image_pixel_height": HEIGHT,
        "image_pixel_width": WIDTH,
        "start_udp_port": 2000,
        "module_positions": {},
        "number_of_writers": 1,
        "live_stream_configs": {stream_address: {"type": "forward", "config": []}},
        **extra,
    }


class StdDaqRing:
    """`/dev/shm/<D>-image` as std_daq's receiver makes it: a plain segment, no companion."""

    def __init__(self, detector: str) -> None:
        self.name = f"{detector}-image"
        self.shm = shared_memory.SharedMemory(name=self.name, create=True, size=STD_DAQ_SIZE)
        # std_daq's services unlink the name themselves; Python's tracker must not do it too.
        resource_tracker.unregister(f"/{self.name}", "shared_memory")

    def write(self, image_id: int, image: npt.NDArray[np.uint16]) -> None:
        """Write an image into slot image_id % 1000 (only these pages get memory)."""
        offset = (image_id % 1000) * SLOT_BYTES
        assert self.shm.buf is not None
        self.shm.buf[offset : offset + SLOT_BYTES] = image.tobytes()

    def close(self) -> None:
        """Unmap and unlink, as std_daq's receiver does when it exits."""
        self.shm.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/{self.name}")


def metadata_of(image_id: int) -> bytes:
    """std_daq's ImageMetadata of a good 2016x2016 uint16 gigafrost image."""
    return encode_image_metadata(
        ImageMeta(image_id, HEIGHT, WIDTH, SLOT_BYTES, Dtype.UINT16, Status.GOOD_IMAGE, detail=GfInfo())
    )


def read_line(process: subprocess.Popen[bytes], prefix: str) -> str:
    """The first stdout line starting with `prefix` (fails if the process exits first)."""
    assert process.stdout is not None
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        if process.poll() is not None:
            break
        readable, _, _ = select.select([process.stdout], [], [], 0.2)
        if readable:
            line = process.stdout.readline().decode()
            if line.startswith(prefix):
                return line.strip()
    raise AssertionError(f"no {prefix!r} line from pid {process.pid}")


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM by PID (SIGKILL after the deadline); the exit status."""
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


def metrics(port: int) -> dict[str, float]:
    """The live stream's Prometheus samples by metric name (labels dropped)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=DEADLINE_S).text
    samples = {}
    for line in text.splitlines():
        match = re.match(r"^(stddaq_live_stream_\w+)(?:\{[^}]*\})? (\S+)$", line)
        if match:
            samples[match[1]] = float(match[2])
    return samples


def wait_until(check: Any, what: str) -> Any:
    """Poll `check` until it returns something truthy (fails naming `what` at the deadline)."""
    return shared_wait_until(what, check, DEADLINE_S, every=0.02)


@pytest.fixture
def detector() -> Iterator[str]:
    """A unique detector name; its /dev/shm and /tmp names are removed afterwards."""
    name = f"GF{uuid.uuid4().hex[:10]}"
    yield name
    for path in (f"/dev/shm/{name}-image", f"/dev/shm/{name}-image.stddaq", f"/tmp/{name}-image"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def test_live_stream_on_a_std_daq_made_ring_sends_std_daqs_exact_bytes(detector: str, tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_tcp_port()}"
    config_path = tmp_path / "gf.json"
    config_path.write_text(json.dumps(gigafrost_config(detector, address)))
    ring = StdDaqRing(detector)
    context = zmq.Context.instance()
    publisher = context.socket(zmq.XPUB)  # a PUB that also tells when a subscriber is there
    publisher.setsockopt(zmq.LINGER, 0)
    publisher.bind(f"ipc:///tmp/{detector}-image")
    viewer = context.socket(zmq.SUB)
    viewer.setsockopt(zmq.LINGER, 0)
    viewer.setsockopt(zmq.SUBSCRIBE, b"")
    image = pixels_of(3)
    ring.write(3, image)
    started = time.monotonic()
    stream = subprocess.Popen(
        [sys.executable, "-m", "stddaq_live_stream", str(config_path), address, "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "live_stream.log", "wb"),  # noqa: SIM115 (closed with the process)
    )
    try:
        ready = read_line(stream, "READY")
        ready_s = time.monotonic() - started
        port = int(ready.split("metrics_port=")[1].split()[0])
        viewer.connect(address)
        # Count, not time: the metadata goes out once the live stream subscribed to it and
        # counts our viewer; std_daq's test publishes 1 s after the start, so never earlier.
        wait_until(
            lambda: publisher.poll(100) and publisher.recv()[:1] == b"\x01", "the metadata subscription"
        )
        wait_until(lambda: metrics(port).get("stddaq_live_stream_viewers") == 1, "the viewer counted")
        time.sleep(max(0.0, started + 1.0 - time.monotonic()))
        publisher.send(metadata_of(3))
        assert viewer.poll(int(DEADLINE_S * 1000)), (tmp_path / "live_stream.log").read_text()
        header, pixels = viewer.recv_multipart()
        assert header == EXPECTED_HEADER
        assert pixels == image.tobytes()
        # It says plainly that this ring cannot prove the image was not overwritten.
        samples = wait_until(
            lambda: (m := metrics(port)).get("stddaq_live_stream_unverified_images_total") == 1
            and m.get("stddaq_live_stream_ring_unverified") == 1
            and m,
            "the unverified count and gauge",
        )
        assert samples["stddaq_live_stream_ring_unverified"] == 1
        assert samples["stddaq_live_stream_images_sent_total"] == 1
        print(f"FIGURES live stream exec to READY {ready_s:.2f} s; first image published "
              f"{time.monotonic() - started:.2f} s after start")
    finally:
        status = stop(stream)
        viewer.close()
        publisher.close()
        ring.close()
    log = (tmp_path / "live_stream.log").read_text()
    assert status == 0, log
    assert "cannot prove that an image was not overwritten" in log
    assert os.path.exists(f"/dev/shm/{detector}-image") is False  # only we unlinked it


def test_a_writer_records_from_a_std_daq_made_ring(detector: str) -> None:
    from stddaq_common.bus.metadata_stream import MetadataPublisher
    from tests.driver.harness import DriverProcess

    base = Path(tempfile.mkdtemp(prefix="sdr", dir="/tmp"))
    root = base / "data"
    (root / "run").mkdir(parents=True)
    config_path = base / "gf.json"
    config_path.write_text(json.dumps(gigafrost_config(detector, f"tcp://127.0.0.1:{free_tcp_port()}")))
    ring = StdDaqRing(detector)
    publisher = MetadataPublisher(f"ipc:///tmp/{detector}-image")
    env = {key: value for key, value in os.environ.items() if not key.startswith("STDDAQ_")}
    writer_log = open(base / "writer.log", "wb")  # noqa: SIM115 (closed below)
    writer = subprocess.Popen(
        [sys.executable, "-m", "stddaq_writer", str(config_path), "--index", "0", "--disk-reserve-mb", "1"],
        stdout=subprocess.PIPE, stderr=writer_log, env=env,
    )
    driver = None
    try:
        driver = DriverProcess(config_path, root)
        wait_until(lambda: all(w["alive"] for w in driver.status()["writers"]), "the writer alive")
        response = driver.http.post("/start", json={"path": str(root / "run"), "n_image": 3})
        assert response.status_code == 200, response.text
        acq_id = response.json()["acquisition_id"]
        wait_until(lambda: driver.status()["state"] in ("waiting_for_first_image", "error"), "the start")
        for image_id in (3, 4, 5):
            ring.write(image_id, pixels_of(image_id))
            assert publisher.publish_bytes(metadata_of(image_id))
        status = wait_until(
            lambda: (s := driver.status())["acquisition_id"] == acq_id and s["state"] == "idle" and s,
            "the acquisition's end",
        )
        assert status["outcome"] == "file_saved", status.get("last_error")
        [path] = status["files"]
        with h5py.File(path, "r") as file:
            data = file[f"/{detector}/data"]
            assert data.shape == (3, HEIGHT, WIDTH)
            for position, image_id in enumerate((3, 4, 5)):
                assert np.array_equal(data[position], pixels_of(image_id))
            assert list(file[f"/{detector}/metadata"]["image_id"]) == [3, 4, 5]
    finally:
        if driver is not None:
            driver.stop()
        stop(writer)
        writer_log.close()
        publisher.close()
        ring.close()
    log = (base / "writer.log").read_text()
    shutil.rmtree(base, ignore_errors=True)
    assert "cannot prove that an image was not overwritten" in log
