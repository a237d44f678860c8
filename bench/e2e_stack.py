"""The end-to-end benchmark's processes: the stack, the fake camera and a live-stream viewer.

The stack's services (receiver, writers, driver) run under `stddaq_stack` Supervisors, one
each so that they start at the same time, and the live stream under another one, so the
benchmark can measure with and without it. The fake
camera runs as a `stddaq_stack` Child of its own: one camera process per rate step (its
rate is fixed at start), its ids continuing where the previous one stopped. The viewer is a
separate process subscribing to the live stream (a real viewer is a separate program,
usually on another machine: it gets the receiver's malloc settings so that its share of
these 2 cores is no larger than it must be).
Every process is stopped by its pid; the ring and socket files are removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bench.bench_receiver import SINK_MALLOC_ENV
from bench.proc_cpu import CpuTimes, cpu_times
from stddaq_common.config.model import DaqConfig, load_config
from stddaq_common.runtime.child_process import ChildProcess
from stddaq_common.testing.configs import write_pco_config
from stddaq_common.testing.processes import free_port, wait_until
from stddaq_stack.child import Child, ProcessSpec
from stddaq_stack.leftovers import remove_leftovers
from stddaq_stack.proc_stats import cpu_seconds
from stddaq_stack.rest_client import DriverClient
from stddaq_stack.stack_spec import StackOptions, stack_specs
from stddaq_stack.supervisor import Supervisor

READY_TIMEOUT_S = 120.0
WRITERS_ALIVE_TIMEOUT_S = 30.0
_SENT = re.compile(r"sent (\d+) messages")

_VIEWER = """
import json, signal, sys, time, zmq, numpy as np
from stddaq_fake_camera.frames import FramePattern
address, height, width, check_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pattern = FramePattern((height, width), np.dtype("<u2"))
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.SUBSCRIBE, b"")
sock.setsockopt(zmq.RCVHWM, 20)
sock.connect(address)
print("READY viewer", flush=True)
received = checked = bad = backwards = 0
last = -1
while not stop:
    if not sock.poll(100):
        continue
    parts = sock.recv_multipart(copy=False)
    frame = json.loads(parts[0].bytes)["frame"]
    received += 1
    backwards += frame <= last
    last = frame
    if frame % check_every == 0:
        checked += 1
        image = np.frombuffer(parts[1].buffer, "<u2").reshape(height, width)
        bad += not np.array_equal(image, pattern.frame(frame))
print(json.dumps({"received": received, "checked": checked, "bad": bad, "backwards": backwards}), flush=True)
"""


def write_config(workdir: Path, detector: str, writers: int, live_address: str) -> Path:
    """The DAQ config of the benchmark's detector (2 MiB frames, forward live stream)."""
    return write_pco_config(
        workdir / "daq.json", detector, 1024, 1024, number_of_writers=writers,
        ipc_dir=str(workdir / "ipc"), stats_collection_period=60, log_level="warning",
        live_stream_configs={live_address: {"type": "forward"}},
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ViewerCounts:
    """What the viewer received from the live stream."""

    received: int
    checked: int
    bad: int
    backwards: int


class Viewer:
    """A live-stream viewer process (SUB), checking every `check_every`-th image."""

    def __init__(self, address: str, check_every: int, log: TextIO) -> None:
        argv = [sys.executable, "-c", _VIEWER, address, "1024", "1024", str(check_every)]
        self._process = ChildProcess(argv, name="viewer", env=SINK_MALLOC_ENV, output=log, prefix="[viewer] ")
        if not self._process.start().wait_ready(READY_TIMEOUT_S):
            self._process.stop(0, signal.SIGKILL)
            raise RuntimeError("the viewer did not start")

    @property
    def pid(self) -> int:
        """The viewer's pid."""
        return self._process.popen.pid

    def stop(self) -> ViewerCounts:
        """Stop the viewer (SIGTERM) and return its counts."""
        self._process.stop(30.0)
        self._process.wait_output(30.0)
        counts = json.loads([line for line in self._process.lines if line.startswith("{")][-1])
        return ViewerCounts(counts["received"], counts["checked"], counts["bad"], counts["backwards"])


class BenchStack:
    """The benchmark's detector stack: services, live stream, camera; stopped by pid."""

    def __init__(self, workdir: Path, writers: int, log: TextIO) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.data.mkdir()
        (workdir / "ipc").mkdir()
        self.log = log
        self.detector = f"bench-e2e-{workdir.name[-8:].lower().replace('_', 'x')}"
        self.camera_port = free_port()
        self.live_address = f"tcp://127.0.0.1:{free_port()}"
        self.config_path = write_config(workdir, self.detector, writers, self.live_address)
        self.config: DaqConfig = load_config(self.config_path)
        rest_port = free_port()
        options = StackOptions(
            camera_address=f"tcp://127.0.0.1:{self.camera_port}", connections=4,
            rest_port=rest_port, ws_port=free_port(), allowed_roots=[str(self.data)],
        )
        specs = stack_specs(str(self.config_path), self.config, options)
        self._core = [Supervisor([spec], output=log, ready_timeout=READY_TIMEOUT_S)
                      for spec in specs if not spec.name.startswith("live-")]
        self._live = Supervisor([s for s in specs if s.name.startswith("live-")], output=log,
                                ready_timeout=READY_TIMEOUT_S)
        self._live_running = False
        self.viewer: Viewer | None = None
        self.camera: Child | None = None
        self.next_id = 1
        self.sent_while_viewing = 0
        """Frames the cameras sent while a viewer was on (what it could have received)."""
        self.client = DriverClient(f"http://127.0.0.1:{rest_port}", timeout=30.0)

    def start(self) -> None:
        """Start receiver, writers and driver (at the same time: none needs another to start;
        writers attach to the ring at their first acquisition); wait until the driver hears
        every writer."""
        errors: list[BaseException] = []

        def start_one(supervisor: Supervisor) -> None:
            try:
                supervisor.start()
            except BaseException as error:  # re-raised below, in this thread
                errors.append(error)

        threads = [threading.Thread(target=start_one, args=(sup,)) for sup in self._core]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        wait_until(
            "the driver hearing from every writer",
            lambda: all(w["alive"] for w in self.client.status()["writers"]),
            WRITERS_ALIVE_TIMEOUT_S,
            every=0.2,
        )

    def live_on(self, check_every: int) -> None:
        """Start the live stream (forward mode) and a viewer process reading it."""
        if not self._live_running:
            self._live.start()
            self._live_running = True
        if self.viewer is None:
            self.viewer = Viewer(self.live_address, check_every, self.log)
            time.sleep(0.3)  # the subscription reaches the live stream

    def live_off(self) -> ViewerCounts | None:
        """Stop the viewer and the live stream; what the viewer received (None if none ran)."""
        viewer, self.viewer = self.viewer, None
        counts = viewer.stop() if viewer is not None else None
        if self._live_running:
            self._live.stop()
            self._live_running = False
        return counts

    @property
    def live_running(self) -> bool:
        """True while the live stream runs."""
        return self._live_running

    def start_camera(self, rate_hz: float, frames: int = 0) -> None:
        """Start a fake camera streaming 1024x1024 uint16 frames at `rate_hz`: endlessly, or
        `frames` of them and then exit."""
        argv = [sys.executable, "-m", "stddaq_fake_camera",
                "--address", f"tcp://127.0.0.1:{self.camera_port}", "--shape", "1024", "1024",
                "--dtype", "uint16", "--rate", f"{rate_hz:g}", "--frames", str(frames),
                "--first-id", str(self.next_id), "--compression", "none", "--log-level", "info"]
        self.camera = Child(ProcessSpec("camera", argv, restart=False), self.log, 12)
        self.camera.start()
        if not self.camera.wait_ready(READY_TIMEOUT_S):
            raise RuntimeError("the fake camera did not start")

    def stop_camera(self) -> int:
        """Stop the camera; the number of frames it sent (the next camera continues after them)."""
        camera, self.camera = self.camera, None
        if camera is None:
            return 0
        camera.stop(30.0)
        sent = [int(m.group(1)) for line in camera.recent_lines if (m := _SENT.search(line))]
        self.next_id += sent[-1] if sent else 10_000_000
        if self.viewer is not None:
            self.sent_while_viewing += sent[-1] if sent else 0
        return sent[-1] if sent else 0

    def pids(self) -> dict[str, int]:
        """The pid of each running process of the benchmark, by name (receiver, writer-k,
        driver, live-k, camera, viewer)."""
        pids: dict[str, int | None] = {row.name: row.pid for sup in self._core for row in sup.rows()}
        if self._live_running:
            pids.update({row.name: row.pid for row in self._live.rows()})
        if self.camera is not None:
            pids["camera"] = self.camera.pid
        if self.viewer is not None:
            pids["viewer"] = self.viewer.pid
        return {name: pid for name, pid in pids.items() if pid is not None}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each running process of the benchmark."""
        seconds = {name: cpu_seconds(pid) for name, pid in self.pids().items()}
        return {name: value for name, value in seconds.items() if value is not None}

    def cpu_times(self) -> dict[str, CpuTimes]:
        """User and system CPU seconds used so far by each running process of the benchmark."""
        times = {name: cpu_times(pid) for name, pid in self.pids().items()}
        return {name: value for name, value in times.items() if value is not None}

    def close(self) -> list[str]:
        """Stop everything (camera, viewer, live stream, services); return files left behind."""
        with contextlib.suppress(Exception):
            self.stop_camera()
        with contextlib.suppress(Exception):
            self.live_off()
        for supervisor in reversed(self._core):  # driver, writers, receiver
            supervisor.stop()
        return remove_leftovers(self.config)


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """CPU seconds each process used between two `cpu_seconds()` readings."""
    return {name: round(after[name] - before.get(name, 0.0), 3) for name in after}
