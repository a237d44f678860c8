"""Test rig for the fault tests: a whole stack under `stddaq up`, a fake camera we control,
a viewer that checks every streamed pixel, and a reader that checks every written pixel.

Every name is unique per test (detector name, ipc directory, TCP ports); every process
started here is stopped by its PID; /dev/shm entries of the detector are removed at the end.
No assertion is about speed: waits poll for a condition with a generous deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import httpx
import numpy as np
import zmq

from stddaq_common.runtime.child_process import ChildProcess
from stddaq_common.testing.processes import free_port, start_service, stop_service, wait_until
from stddaq_common.wire.array10 import decode_array10
from stddaq_fake_camera.frames import FramePattern
from tests.common.configs import pco_config

PYTHON = sys.executable
STDDAQ = [PYTHON, "-m", "stddaq_common.cli"]
DEADLINE_S = 90.0
"""Generous bound on any single wait (2 shared cores); never an assertion about speed."""


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = DEADLINE_S, every: float = 0.1) -> Any:
    """Poll `predicate` until it returns something true; AssertionError naming `what`."""
    return wait_until(what, predicate, timeout, every)


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Signal a process we started (by its PID), wait, SIGKILL it if it does not end."""
    if process.poll() is None:
        os.kill(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)
    return process.returncode


@dataclass
class Camera:
    """A fake PCO camera process (binds PUSH on 127.0.0.1:port)."""

    process: ChildProcess

    @classmethod
    def start(cls, port: int, height: int, width: int, *options: str) -> Camera:
        """Start `python -m stddaq_fake_camera` with `options` and wait for its READY line."""
        argv = [
            PYTHON, "-m", "stddaq_fake_camera", "--address", f"tcp://127.0.0.1:{port}",
            "--shape", str(height), str(width), "--dtype", "uint16", *options,
        ]  # fmt: skip
        return cls(start_service(argv, name="fake camera", deadline_s=DEADLINE_S))

    def wait(self, timeout: float = DEADLINE_S) -> int:
        """Wait until it has sent every frame (--frames N) and exited."""
        return self.process.wait(timeout)

    def stop(self) -> None:
        """SIGTERM (it stops sending and exits 0)."""
        stop_service(self.process, deadline_s=30.0)


@dataclass
class ViewerReport:
    """What a checking viewer saw."""

    good: int = 0
    wrong: list[int] = field(default_factory=list)
    """Ids whose pixels were not the camera's frame of that id (must stay empty)."""
    undecodable: int = 0
    last_id: int | None = None


class Viewer:
    """Subscribes to a live stream and compares every image with the camera's frame of its id."""

    def __init__(self, address: str, pattern: FramePattern) -> None:
        self.report = ViewerReport()
        self._pattern = pattern
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(address)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            parts = self._socket.recv_multipart()
            try:
                header, data = decode_array10(parts)
                image = header.array(data)
            except ValueError:
                self.report.undecodable += 1
                continue
            if np.array_equal(image, self._pattern.frame(header.frame)):
                self.report.good += 1
            else:
                self.report.wrong.append(header.frame)
            self.report.last_id = header.frame

    def close(self) -> ViewerReport:
        """Stop reading; what was seen."""
        self._stop.set()
        self._thread.join(10)
        self._socket.close(0)
        self._context.term()
        return self.report


@dataclass
class FileCheck:
    """What an acquisition's files hold, read back with h5py (every pixel checked)."""

    ids: list[int]
    status: list[int]
    close_reasons: list[str]

    @property
    def written_ids(self) -> list[int]:
        """Ids recorded with status 1 (their pixels were checked against the camera's)."""
        return [i for i, s in zip(self.ids, self.status, strict=True) if s == 1]

    @property
    def missing_ids(self) -> list[int]:
        """Ids recorded with status 0 (their pixels were checked to be zeros)."""
        return [i for i, s in zip(self.ids, self.status, strict=True) if s == 0]


def check_files(
    paths: list[str], detector: str, pattern: FramePattern, *, zeros_when_missing: bool = True, every: int = 1
) -> FileCheck:
    """Open each file (SWMR read, as a crashed writer may have left it open), check that
    every status-1 image is exactly the camera's frame of its id and (unless the writer was
    killed, which may leave a chunk whose record was not written yet) every status-0 image
    is zeros; ids and statuses in file order, concatenated. `every` > 1 checks the pixels of
    every `every`-th image only."""
    ids: list[int] = []
    status: list[int] = []
    reasons: list[str] = []
    for path in paths:
        with h5py.File(path, "r", swmr=True) as h5:
            group = h5[detector]
            records = group["metadata"][...]
            data = group["data"]
            n = min(len(records), data.shape[0])
            for index in range(n):
                image_id, state = int(records["image_id"][index]), int(records["status"][index])
                ids.append(image_id)
                status.append(state)
                if index % every:
                    continue  # pixels of every `every`-th image only (ids and status of all)
                image = data[index]
                if state == 1:
                    wrong = f"{path}[{index}]: image {image_id} is not the camera's"
                    assert np.array_equal(image, pattern.frame(image_id)), wrong
                elif zeros_when_missing:
                    assert not image.any(), f"{path}[{index}] (status {state}) is not zeros"
            reasons.append(str(group.attrs.get("close_reason", "")))
    return FileCheck(ids, status, reasons)


class Stack:
    """`stddaq up CONFIG` as a subprocess (camera started separately), REST client, output lines."""

    def __init__(
        self,
        base: Path,
        *,
        height: int = 64,
        width: int = 64,
        writers: int = 2,
        live_stream: bool = True,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.detector = f"flt-{uuid.uuid4().hex[:10]}"
        self.height, self.width = height, width
        self.pattern = FramePattern((height, width), np.dtype("<u2"))
        self.ipc_dir = Path(tempfile.mkdtemp(prefix="flt", dir="/tmp"))
        self.data = base / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.rest_port, self.ws_port, self.camera_port = free_port(), free_port(), free_port()
        self.live_address = f"tcp://127.0.0.1:{free_port()}" if live_stream else None
        document = pco_config(
            self.detector, height, width,
            number_of_writers=writers,
            ipc_dir=str(self.ipc_dir),
            stats_collection_period=1,
            live_stream_configs={self.live_address: {"type": "forward"}} if self.live_address else {},
            **(config or {}),
        )
        self.writers = writers
        self.config_path = base / "daq.json"
        self.config_path.write_text(json.dumps(document))
        self.log_path = base / "stack.log"
        """Everything `stddaq up` printed (kept with the test's files for post-mortems)."""
        self.cameras: list[Camera] = []
        self.process: ChildProcess | None = None
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.rest_port}/api/v1", timeout=30)

    @property
    def lines(self) -> list[str]:
        """Everything `stddaq up` printed so far, one entry per line."""
        return [] if self.process is None else list(self.process.lines)

    # --- the stack process ---

    def up(self, *extra: str) -> None:
        """Start `stddaq up` and wait until every service is ready."""
        argv = [
            *STDDAQ, "up", str(self.config_path),
            "--camera-address", f"tcp://127.0.0.1:{self.camera_port}",
            "--rest-port", str(self.rest_port), "--ws-port", str(self.ws_port),
            "--allowed-root", str(self.data), "--status-every", "0", "--metrics-port-base", "0", *extra,
        ]  # fmt: skip
        # PYTHONFAULTHANDLER: a crashing service says where
        self.process = start_service(
            argv, name="stddaq up", env={"PYTHONFAULTHANDLER": "1"}, log_path=self.log_path, ready=False
        )
        self.wait_line(r"\[stack\] stack of .* is up")
        wait_for("every writer heard by the driver", self.writers_alive)

    def wait_line(self, pattern: str, start: int = 0, timeout: float = DEADLINE_S) -> re.Match[str]:
        """The first output line from index `start` on that matches `pattern`."""
        regex = re.compile(pattern)

        def find() -> re.Match[str] | None:
            for line in self.lines[start:]:
                match = regex.search(line)
                if match:
                    return match
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError("stddaq up exited:\n" + "\n".join(self.lines[-40:]))
            return None

        try:
            found: re.Match[str] = wait_for(f"a line matching {pattern!r}", find, timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}\n" + "\n".join(self.lines[-40:])) from None
        return found

    def pid_of(self, service: str) -> int:
        """PID of the service's current process (from the supervisor's lines)."""
        pid = None
        regex = re.compile(rf"\[stack\] {re.escape(service)} (?:ready|restarted) \(pid (\d+)")
        for line in list(self.lines):
            match = regex.search(line)
            if match:
                pid = int(match.group(1))
        assert pid is not None, f"no pid of {service} in the stack's output"
        return pid

    def services(self) -> list[str]:
        """Names of the supervised services (from their first `ready` line)."""
        names = []
        for line in list(self.lines):
            match = re.search(r"\[stack\] (\S+) ready \(pid \d+\)", line)
            if match and match.group(1) not in names:
                names.append(match.group(1))
        return names

    def crash(self, service: str) -> int:
        """SIGKILL the service's process; wait until the supervisor has restarted it; new PID."""
        old = self.pid_of(service)
        mark = len(self.lines)
        os.kill(old, signal.SIGKILL)
        self.wait_line(rf"\[stack\] {re.escape(service)} exited with -9; restarting", mark)
        match = self.wait_line(rf"\[stack\] {re.escape(service)} restarted \(pid (\d+)", mark)
        return int(match.group(1))

    def down(self) -> int:
        """SIGINT `stddaq up` (as Ctrl-C), wait for it; its exit code."""
        if self.process is None:
            return 0
        return stop_service(self.process, signal.SIGINT, deadline_s=90)

    def all_pids(self) -> list[int]:
        """Every service PID the supervisor reported (first starts and restarts)."""
        found = re.findall(r"\[stack\] \S+ (?:ready|restarted) \(pid (\d+)", "\n".join(self.lines))
        return [int(pid) for pid in found]

    def last_stats(self, service: str) -> dict[str, float]:
        """The fields of the last stats line a service logged (InfluxDB line protocol)."""
        marker = f"stddaq.stats: {service},"
        lines = [line for line in list(self.lines) if marker in line]
        assert lines, f"no stats line from {service}"
        fields: dict[str, float] = {}
        for item in lines[-1].split(marker, 1)[1].split(" ")[1].split(","):
            name, _, value = item.partition("=")
            with contextlib.suppress(ValueError):
                fields[name] = float(value.rstrip("i"))
        return fields

    def assert_stops_clean(self) -> None:
        """Stopping leaves no process, shared-memory segment or socket file behind."""
        pids = self.all_pids()
        assert self.down() == 0, "\n".join(self.lines[-30:])
        assert not any("left behind" in line for line in self.lines), "a service left a file behind"
        assert self.leftovers() == []
        assert [pid for pid in pids if pid_alive(pid)] == []

    def leftovers(self) -> list[str]:
        """Shared-memory segments and ipc socket files of this detector that still exist."""
        shm = [f"/dev/shm/{n}" for n in os.listdir("/dev/shm") if n.startswith(self.detector)]
        return shm + [str(p) for p in self.ipc_dir.iterdir()]

    def cleanup(self) -> None:
        """Stop everything started here (by PID) and remove what is left."""
        for camera in self.cameras:
            camera.stop()
        with contextlib.suppress(Exception):
            self.down()
        self.client.close()
        for name in os.listdir("/dev/shm"):
            if name.startswith(self.detector):
                with contextlib.suppress(OSError):
                    os.unlink(f"/dev/shm/{name}")
        shutil.rmtree(self.ipc_dir, ignore_errors=True)

    # --- REST ---

    def status(self) -> dict[str, Any]:
        """GET /status."""
        answer = self.client.get("/status")
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def stats(self) -> dict[str, Any]:
        """GET /stats (the driver's counters and gauges)."""
        result: dict[str, Any] = self.client.get("/stats").json()
        return result

    def writers_alive(self) -> bool:
        """True when the driver has heard from every writer recently."""
        try:
            return all(w["alive"] for w in self.status()["writers"])
        except (httpx.HTTPError, KeyError):
            return False

    def wait_idle(self) -> None:
        """Wait until the driver answers, is idle and hears every writer."""

        def ready() -> bool:
            try:
                return self.status()["state"] == "idle" and self.writers_alive()
            except httpx.HTTPError:
                return False

        wait_for("the stack idle with every writer alive", ready)

    def start(self, name: str, **request: Any) -> dict[str, Any]:
        """POST /start into data/<name>; the answer (AssertionError if refused)."""
        answer = self.client.post("/start", json={"path": str(self.data / name), **request})
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def stop(self) -> None:
        """POST /stop."""
        answer = self.client.post("/stop")
        assert answer.status_code == 202, answer.text

    def wait_state(self, *states: str, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """The status once its state is one of `states`."""
        status: dict[str, Any] = wait_for(
            f"state in {states}", lambda: (s := self.status())["state"] in states and s, timeout
        )
        return status

    def wait_end(self, acquisition_id: int, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """The status once acquisition `acquisition_id` has ended (idle with an outcome)."""

        def ended() -> dict[str, Any] | None:
            status = self.status()
            done = status["acquisition_id"] == acquisition_id and status["outcome"] and not status["busy"]
            return status if done else None

        status: dict[str, Any] = wait_for(f"acquisition {acquisition_id} ended", ended, timeout)
        return status

    def wait_written(self, count: int, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """The status once at least `count` images were written."""
        status: dict[str, Any] = wait_for(
            f"{count} images written", lambda: (s := self.status())["images_written"] >= count and s, timeout
        )
        return status

    def record(self, name: str, n_image: int, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """A whole acquisition of `n_image` images into data/<name>; its final status."""
        started = self.start(name, n_image=n_image)
        return self.wait_end(started["acquisition_id"], timeout)

    def files_of(self, status: dict[str, Any]) -> list[str]:
        """The acquisition's writer files that exist, in writer order."""
        return [path for path in status["files"] if os.path.exists(path)]

    def read_back(self, status: dict[str, Any]) -> FileCheck:
        """Check the files of an ended acquisition, in acquisition order (master file if any)."""
        master = status.get("master_file")
        if master and os.path.exists(master):
            return check_files([master], self.detector, self.pattern)
        return check_files(self.files_of(status), self.detector, self.pattern)

    def camera(self, *options: str, width: int | None = None) -> Camera:
        """A fake camera on the stack's camera port (frames `width` wide if given); it is
        stopped at cleanup if it still runs."""
        camera = Camera.start(self.camera_port, self.height, width or self.width, *options)
        self.cameras.append(camera)
        return camera


@contextlib.contextmanager
def running_stack(base: Path, *up_args: str, **options: Any) -> Iterator[Stack]:
    """A Stack that is up, cleaned up (processes by PID, /dev/shm, ipc dir) afterwards."""
    stack = Stack(base, **options)
    try:
        stack.up(*up_args)
        yield stack
    finally:
        stack.cleanup()
