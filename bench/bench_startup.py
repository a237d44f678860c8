"""Exec to READY of every service (receiver, writer, driver, live stream, fake camera, web),
beside the same run's `python -c pass`.

Each service is started as a user starts it (`python -m <package> CONFIG ...`) with a small
config in its own directory; the figure is the wall time from just before the exec to the
READY line on its stdout (the readiness line of stddaq_common.runtime.runner; the fake
camera prints its own), the best of several starts: the machine is shared and noisy. The
ceiling is the exec time of `python -c pass` (the interpreter alone) in the same run; the
ratio is service / interpreter (lower is better). Beside it, the CPU seconds the process
spent until READY (/proc/<pid>/stat), which a loaded machine changes far less than the
wall time: on an idle machine wall time is about CPU time. Every service must be READY within
`LIMIT_S` (issue 12: a client that publishes 1 s after starting a service must not lose it).
Every process is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.harness import BenchRecord, record
from stddaq_common.testing.configs import pco_config

LIMIT_S = 1.0
DEADLINE_S = 60.0
PYTHON = sys.executable


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(directory: Path, stream_address: str) -> Path:
    document = pco_config(
        f"bst{uuid.uuid4().hex[:8]}", 64, 64,
        number_of_writers=1,
        ipc_dir=str(directory),
        stats_collection_period=3600,
        live_stream_configs={stream_address: {"type": "forward"}},
    )  # fmt: skip
    path = directory / "daq.json"
    path.write_text(json.dumps(document))
    return path


def _commands(directory: Path) -> dict[str, list[str]]:
    stream = f"tcp://127.0.0.1:{_free_port()}"
    config = str(_config(directory, stream))
    data = directory / "data"
    data.mkdir(exist_ok=True)
    return {
        "receiver": [PYTHON, "-m", "stddaq_receiver", config, f"tcp://127.0.0.1:{_free_port()}"],
        "writer": [PYTHON, "-m", "stddaq_writer", config, "--index", "0"],
        "driver": [PYTHON, "-m", "stddaq_driver", config, "--rest-port", str(_free_port()),
                   "--ws-port", str(_free_port()), "--allowed-root", str(data)],
        "live stream": [PYTHON, "-m", "stddaq_live_stream", config, stream],
        "fake camera": [PYTHON, "-m", "stddaq_fake_camera", "--address", f"tcp://127.0.0.1:{_free_port()}",
                        "--shape", "64", "64", "--rate", "1"],
        "web": [PYTHON, "-m", "stddaq_web", config, "--port", "0", "--stream", stream],
    }


TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def exec_to_ready(command: list[str], ready_prefix: str = "READY") -> tuple[float, float]:
    """(wall s, CPU s) from exec to the READY line (RuntimeError if it never gets ready)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STDDAQ_")}
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert process.stdout is not None
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            readable, _, _ = select.select([process.stdout], [], [], 0.5)
            if readable:
                line = process.stdout.readline()
                if line.startswith(ready_prefix.encode()):
                    return time.perf_counter() - started, cpu_seconds(process.pid)
                if not line:
                    break
        raise RuntimeError(f"{command[2]} did not print {ready_prefix} (exit {process.poll()})")
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def interpreter_exec() -> tuple[float, float]:
    """(wall s, CPU s) to exec `python -c pass` and see it exit."""
    before = os.times()
    started = time.perf_counter()
    subprocess.run([PYTHON, "-c", "pass"], check=True)
    wall = time.perf_counter() - started
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu


def run(quick: bool) -> list[BenchRecord]:
    """One record per service: best exec-to-READY time beside `python -c pass`."""
    repeats = 3 if quick else 5
    directory = Path(tempfile.mkdtemp(prefix="bst", dir="/tmp"))
    try:
        commands = _commands(directory)
        passes = [interpreter_exec() for _ in range(repeats)]
        ceiling_wall = min(wall for wall, _ in passes)
        ceiling_cpu = max(min(cpu for _, cpu in passes), 0.01)  # clock ticks: at least one
        records = []
        for service, command in commands.items():
            starts = [exec_to_ready(command) for _ in range(repeats)]
            wall = min(w for w, _ in starts)
            cpu = min(c for _, c in starts)
            verdict = "ok" if wall < LIMIT_S else f"OVER the {LIMIT_S:g} s limit"
            print(f"startup {service}: {wall:.3f} s exec to READY ({verdict}), {cpu:.2f} CPU s; "
                  f"python -c pass {ceiling_wall:.3f} s", file=sys.stderr)
            records.append(record(f"startup: {service} exec to READY (limit {LIMIT_S:g} s)", wall, "s",
                                  "python -c pass exec (same run)", ceiling_wall))
            records.append(record(f"startup: {service} CPU s to READY", cpu, "CPU s",
                                  "python -c pass CPU s (same run)", ceiling_cpu))
        return records
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    for item in run(quick=True):
        print(item)
