"""Helpers for tests that run the fake camera and the receiver as real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stddaq_common.bus.metadata import ImageMeta
from stddaq_common.bus.metadata_stream import MetadataSubscriber
from stddaq_common.names import ipc_address, ipc_path, shm_name
from stddaq_common.ring.image_ring import ImageRing
from stddaq_common.runtime.child_process import ChildProcess
from stddaq_common.testing.configs import write_pco_config
from stddaq_common.testing.processes import free_tcp_address as free_tcp_address  # tests import it here
from stddaq_common.testing.processes import start_service, stats_fields

PYTHON = sys.executable
READY_TIMEOUT_S = 60.0
"""Generous: process start-up on a loaded 2-core machine can take several seconds."""
HEIGHT, WIDTH = 64, 80
CAMERA_LINGER_S = 600
"""How long a camera that sent everything waits for the receiver to take its queued frames
(socket buffers hold many small frames; a busy machine may need minutes to drain them)."""


@dataclass
class Process:
    """A started service process, its readiness line and its stderr file."""

    child: ChildProcess
    ready: str
    stderr_path: Path

    @property
    def popen(self) -> subprocess.Popen[str]:
        return self.child.popen

    @property
    def pid(self) -> int:
        return self.child.popen.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = 60.0) -> int:
        return self.child.wait(timeout)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM by PID, then the exit status."""
        self.child.send_signal(signal.SIGTERM)
        return self.child.wait(timeout)


def start_process(args: list[str], stderr_path: Path) -> Process:
    """Start `python <args>` and wait for its READY line."""
    name = " ".join(args[:2])
    child = start_service([PYTHON, *args], name=name, stderr=stderr_path, deadline_s=READY_TIMEOUT_S)
    assert child.ready_line is not None
    return Process(child, child.ready_line.strip(), stderr_path)


def final_stats(stderr: str, service: str = "receiver") -> dict[str, float]:
    """The fields of the last stats line a service logged (InfluxDB line protocol)."""
    return {name: float(value.rstrip("i")) for name, value in stats_fields(stderr, service).items()}


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
                "--rate", "0", "--linger", str(CAMERA_LINGER_S), *extra]
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
    write_pco_config(path, detector, HEIGHT, WIDTH, **{"stats_collection_period": 1, **overrides})


@pytest.fixture
def daq(tmp_path: Path) -> Iterator[Daq]:
    """A unique detector with a config file; kills leftovers and cleans shm/ipc files after."""
    detector = f"rt-{uuid.uuid4().hex[:10]}"
    config_path = tmp_path / "daq.json"
    write_config(config_path, detector)
    setup = Daq(tmp_path, detector, config_path)
    yield setup
    for process in setup.processes:
        process.child.stop(10, signal.SIGKILL)
    for path in (f"/dev/shm/{detector}-image", f"/dev/shm/{detector}-image.stddaq", ipc_path(detector)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def collect(subscriber: MetadataSubscriber, count: int, deadline_s: float = 60.0) -> list[ImageMeta]:
    """Receive `count` metadata messages, or fewer if none arrives for `deadline_s` (a bound
    that only stops a hang: a busy machine delays the messages, it does not stop them)."""
    received: list[ImageMeta] = []
    quiet_since = time.monotonic()
    while len(received) < count and time.monotonic() - quiet_since < deadline_s:
        meta = subscriber.receive(timeout_ms=500)
        if meta is not None:
            received.append(meta)
            quiet_since = time.monotonic()
    return received


def drain(subscriber: MetadataSubscriber, quiet_ms: int = 1500) -> list[ImageMeta]:
    """Everything still arriving until the stream has been quiet for `quiet_ms`."""
    received: list[ImageMeta] = []
    while (meta := subscriber.receive(timeout_ms=quiet_ms)) is not None:
        received.append(meta)
    return received
