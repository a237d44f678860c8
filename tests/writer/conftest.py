"""Fixtures of the writer tests: a config, the producer, writer processes, the driver stub."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stddaq_common.runtime.child_process import ChildProcess
from stddaq_common.testing.processes import start_service, stop_service
from stddaq_common.testing.processes import wait_until as testing_wait_until
from tests.common.configs import pco_config
from tests.writer.driver_stub import DriverStub

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
_names = itertools.count()


def read_line(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The next stdout line of `process` (AssertionError after `timeout` s or at exit)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no output from pid {process.pid} within {timeout} s")
    line = process.stdout.readline()
    if not line:
        raise AssertionError(f"pid {process.pid} exited ({process.wait()}) without output")
    return line.strip()


def stop_process(process: subprocess.Popen[str] | ChildProcess, timeout: float = 15.0) -> int:
    """SIGTERM the process by pid, wait, SIGKILL if it does not exit."""
    if isinstance(process, ChildProcess):
        return stop_service(process, deadline_s=timeout)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()
    return process.returncode


class Daq:
    """One test set-up: config file, producer process, N writer processes, driver stub."""

    def __init__(self, base: Path, n_writers: int, height: int, width: int) -> None:
        self.base = base
        self.detector = f"wt{os.getpid()}x{next(_names)}"
        self.height, self.width = height, width
        self.n_writers = n_writers
        self.ipc_dir = str(base / "ipc")
        os.makedirs(self.ipc_dir)
        self.config = pco_config(
            self.detector, height, width,
            number_of_writers=n_writers,
            ipc_dir=self.ipc_dir,
            stats_collection_period=60,
        )
        self.config_path = base / "daq.json"
        self.config_path.write_text(json.dumps(self.config))
        self.writers: list[ChildProcess] = []
        self.producer: subprocess.Popen[str] | None = None
        self.driver = DriverStub(self.ipc_dir, self.detector, n_writers)

    def start_producer(self) -> None:
        """Start the producer process (it creates the ring)."""
        self.producer = subprocess.Popen(
            [PYTHON, "-m", "tests.writer.producer", str(self.config_path)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert read_line(self.producer) == "ready"

    def produce(self, first: int, count: int, compressed: bool = False) -> None:
        """Have the producer write images first..first+count-1 into the ring."""
        assert self.producer is not None and self.producer.stdin is not None
        self.producer.stdin.write(f"write {first} {count}{' compressed' if compressed else ''}\n")
        self.producer.stdin.flush()
        assert read_line(self.producer) == f"wrote {first} {count}"

    def start_writers(self, *extra: str) -> None:
        """Start the N writer processes and wait for their READY line and `ready` event."""
        for k in range(self.n_writers):
            argv = [PYTHON, "-m", "stddaq_writer", str(self.config_path), "--index", str(k), *extra]
            self.writers.append(start_service(argv, name=f"writer {k}", stderr=None, cwd=REPO, ready=False))
        for process in self.writers:
            assert process.wait_ready(30.0) and process.ready_line is not None
            assert process.ready_line.startswith("READY writer")
        self.driver.wait_all("ready")

    def files(self, directory: Path, prefix: str = "file") -> list[str]:
        """Writer file paths `<directory>/<prefix><k>.h5`."""
        return [str(directory / f"{prefix}{k}.h5") for k in range(self.n_writers)]

    def close(self) -> None:
        """Stop every process by pid and close the sockets."""
        for process in self.writers:
            stop_process(process)
        if self.producer is not None:
            if self.producer.poll() is None and self.producer.stdin is not None:
                self.producer.stdin.write("quit\n")  # closes (and unlinks) the ring
                self.producer.stdin.flush()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.producer.wait(15)
            stop_process(self.producer)
        self.driver.shutdown()


def _make_daq(base: Path, n_writers: int, *writer_args: str) -> Daq:
    base.mkdir(parents=True, exist_ok=True)
    daq = Daq(base, n_writers, height=24, width=40)
    try:
        daq.start_producer()
        daq.start_writers(*writer_args)
    except BaseException:
        daq.close()
        raise
    return daq


@pytest.fixture(scope="module")
def daq1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daq]:
    """Producer + one writer (1 MiB disk reserve), shared by the tests of a module."""
    daq = _make_daq(tmp_path_factory.mktemp("daq1"), 1, "--disk-reserve-mb", "1")
    yield daq
    daq.close()


@pytest.fixture(scope="module")
def daq3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daq]:
    """Producer + three writers, shared by the tests of a module."""
    daq = _make_daq(tmp_path_factory.mktemp("daq3"), 3)
    yield daq
    daq.close()


@pytest.fixture
def own_daq(tmp_path: Path) -> Iterator[Daq]:
    """Producer + one writer for a test that stops them."""
    daq = _make_daq(tmp_path / "daq", 1)
    yield daq
    daq.close()


_acquisitions = itertools.count(1)


@pytest.fixture
def acq_id() -> int:
    """A fresh acquisition id; its images use ids acq_id * 10000 onwards."""
    return next(_acquisitions)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory under /tmp that other users can traverse (mode 0711), removed after."""
    path = Path(tempfile.mkdtemp(prefix="stddaq-writer-test-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    """Poll `predicate` until true (AssertionError after `timeout` s)."""
    testing_wait_until("condition", predicate, timeout)
