"""Helpers for tests that run the fake camera and the receiver as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from stddaq_common.bus.metadata import ImageMeta
from stddaq_common.bus.metadata_stream import MetadataSubscriber
from stddaq_common.names import ipc_address, ipc_path, shm_name
from stddaq_common.ring.image_ring import ImageRing

PYTHON = sys.executable
READY_TIMEOUT_S = 60.0
"""Generous: process start-up on a loaded 2-core machine can take several seconds."""
HEIGHT, WIDTH = 64, 80


def free_tcp_address() -> str:
    """A tcp://127.0.0.1:<port> address whose port was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


@dataclass
class Process:
    """A started service process, its readiness line and its stderr file."""

    popen: subprocess.Popen[str]
    ready: str
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = 60.0) -> int:
        return self.popen.wait(timeout)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM by PID, then the exit status."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
        return self.popen.wait(timeout)


def _read_ready(popen: subprocess.Popen[str], stderr_path: Path) -> str:
    stdout: IO[str] | None = popen.stdout
    assert stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                if popen.poll() is not None:
                    break
                continue
            line = stdout.readline()
            if line.startswith("READY"):
                return line.strip()
            if not line and popen.poll() is not None:
                break
    finally:
        selector.close()
    popen.kill()
    popen.wait(10)
    raise AssertionError(f"no READY line from {popen.args!r}; stderr:\n{stderr_path.read_text()[-3000:]}")


def start_process(args: list[str], stderr_path: Path) -> Process:
    """Start `python <args>` and wait for its READY line."""
    with stderr_path.open("w") as stderr_file:
        popen = subprocess.Popen(
            [PYTHON, *args], stdout=subprocess.PIPE, stderr=stderr_file, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return Process(popen, _read_ready(popen, stderr_path), stderr_path)


def final_stats(stderr: str, service: str = "receiver") -> dict[str, float]:
    """The fields of the last stats line a service logged (InfluxDB line protocol)."""
    lines = [line for line in stderr.splitlines() if f"stddaq.stats: {service}," in line]
    assert lines, f"no stats line from {service} in:\n{stderr[-3000:]}"
    fields_text = lines[-1].split(f"stddaq.stats: {service},", 1)[1].split(" ")[1]
    fields: dict[str, float] = {}
    for item in fields_text.split(","):
        name, _, value = item.partition("=")
        fields[name] = float(value.rstrip("i"))
    return fields


@dataclass
class Daq:
    """One test's detector: config file, names, and the processes it started."""

    tmp_path: Path
    detector: str
    config_path: Path
    processes: list[Process] = field(default_factory=list)
    reader: str | None = None
    """The receiver's --input-reader (None: its default)."""

    @property
    def ring_name(self) -> str:
        return shm_name(self.detector)

    @property
    def metadata_address(self) -> str:
        return ipc_address(self.detector)

    def start_receiver(self, address: str, *extra: str) -> Process:
        reader = ("--input-reader", self.reader) if self.reader else ()
        process = start_process(
            ["-m", "stddaq_receiver", str(self.config_path), address, *reader, *extra],
            self.tmp_path / f"receiver-{len(self.processes)}.err",
        )
        self.processes.append(process)
        return process

    def start_camera(self, address: str, *extra: str) -> Process:
        args = ["-m", "stddaq_fake_camera", "--address", address, "--shape", str(HEIGHT), str(WIDTH),
                "--rate", "0", "--linger", "30", *extra]
        process = start_process(args, self.tmp_path / f"camera-{len(self.processes)}.err")
        self.processes.append(process)
        return process

    def start_script(self, code: str, name: str) -> Process:
        process = start_process(["-c", code], self.tmp_path / f"{name}.err")
        self.processes.append(process)
        return process

    def attach(self) -> tuple[ImageRing, MetadataSubscriber]:
        ring = ImageRing.attach(self.ring_name, timeout=30.0)
        subscriber = MetadataSubscriber(self.metadata_address, timeout_ms=500)
        return ring, subscriber


def write_config(path: Path, detector: str, **overrides: Any) -> None:
    config = {
        "detector_name": detector,
        "detector_type": "pco",
        "n_modules": 1,
        "bit_depth": 16,
        "image_pixel_height": HEIGHT,
        "image_pixel_width": WIDTH,
        "start_udp_port": 0,
        "module_positions": {},
        "stats_collection_period": 1,
        **overrides,
    }
    path.write_text(json.dumps(config))


@pytest.fixture
def daq(tmp_path: Path) -> Iterator[Daq]:
    """A unique detector with a config file; kills leftovers and cleans shm/ipc files after."""
    detector = f"rt-{uuid.uuid4().hex[:10]}"
    config_path = tmp_path / "daq.json"
    write_config(config_path, detector)
    setup = Daq(tmp_path, detector, config_path)
    yield setup
    for process in setup.processes:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait(10)
        if process.popen.stdout is not None:
            process.popen.stdout.close()
    for path in (f"/dev/shm/{detector}-image", f"/dev/shm/{detector}-image.stddaq", ipc_path(detector)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def collect(subscriber: MetadataSubscriber, count: int, deadline_s: float = 60.0) -> list[ImageMeta]:
    """Receive `count` metadata messages (or fewer if the generous deadline passes)."""
    received: list[ImageMeta] = []
    deadline = time.monotonic() + deadline_s
    while len(received) < count and time.monotonic() < deadline:
        meta = subscriber.receive(timeout_ms=500)
        if meta is not None:
            received.append(meta)
    return received


def drain(subscriber: MetadataSubscriber, quiet_ms: int = 1500) -> list[ImageMeta]:
    """Everything still arriving until the stream has been quiet for `quiet_ms`."""
    received: list[ImageMeta] = []
    while (meta := subscriber.receive(timeout_ms=quiet_ms)) is not None:
        received.append(meta)
    return received
