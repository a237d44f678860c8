"""The process harness of the tests and benchmarks: start a service, wait for READY,
wait until something holds, stop it and check how it ended; free ports, unique names.

No wait here is an assertion about speed: every deadline is generous and only stops a
hang (a test on a busy 2-core machine may take many times longer than on an idle one).
"""

from __future__ import annotations

import random
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from stddaq_common.runtime.child_process import MERGE, READY_PREFIX, ChildProcess

__all__ = [
    "DEADLINE_S",
    "MERGE",
    "PYTHON",
    "READY_PREFIX",
    "ChildProcess",
    "free_port",
    "free_tcp_address",
    "short_tmp_dir",
    "start_service",
    "stats_fields",
    "stop_service",
    "unique_name",
    "wait_until",
]

PYTHON = sys.executable
DEADLINE_S = 90.0
"""The default bound on one wait: generous, it only stops a hang."""

T = TypeVar("T")


def wait_until(
    what: str, check: Callable[[], T | None], deadline_s: float = DEADLINE_S, every: float = 0.05
) -> T:
    """Call `check` until it returns something true and return that; AssertionError naming
    `what` once `deadline_s` has passed (the deadline only stops a hang)."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s:g} s: {what}")
        time.sleep(every)


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, below the ephemeral range (an
    outgoing connection, e.g. a receiver's to a camera not started yet, never takes it)
    and never handed out before in this process."""
    rng = random.Random()
    high = _ephemeral_low()
    while True:
        port = rng.randrange(20000, high)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def free_tcp_address() -> str:
    """`tcp://127.0.0.1:<port>` with a port from free_port()."""
    return f"tcp://127.0.0.1:{free_port()}"


def unique_name(prefix: str) -> str:
    """`<prefix>-<10 hex digits>`: a detector (or file) name no other test or run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def short_tmp_dir(prefix: str = "sdq-") -> Path:
    """A new directory directly under /tmp (ipc socket paths must stay below 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _output_tail(process: ChildProcess, lines: int = 40) -> str:
    text = "\n".join(list(process.lines)[-lines:])
    stderr = process.stderr_text()
    return text + (f"\nstderr:\n{stderr[-4000:]}" if stderr else "")


def start_service(
    argv: Sequence[str],
    *,
    name: str | None = None,
    stderr: str | Path | None = MERGE,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: str | Path | None = None,
    ready: bool = True,
    deadline_s: float = DEADLINE_S,
) -> ChildProcess:
    """Start `argv` and (unless `ready` is False) wait for its READY line; if it does not
    come, kill the process and raise AssertionError with its last output."""
    process = ChildProcess(
        argv, name=name, stderr=stderr, env=env, base_env=base_env, log_path=log_path, cwd=cwd
    ).start()
    if ready and not process.wait_ready(deadline_s):
        code = process.stop(timeout=10.0, sig=signal.SIGKILL)
        raise AssertionError(
            f"{process.name} did not print READY within {deadline_s:g} s (exit {code}):\n"
            + _output_tail(process)
        )
    return process


def stop_service(
    process: ChildProcess,
    sig: int = signal.SIGTERM,
    deadline_s: float = DEADLINE_S,
    expect: int | None = None,
) -> int:
    """Send `sig`, wait (SIGKILL after `deadline_s`); the exit code. With `expect`, also
    check it: AssertionError (with the last output) if the process ended otherwise."""
    code = process.stop(deadline_s, sig)
    code = -signal.SIGKILL if code is None else code
    if expect is not None and code != expect:
        raise AssertionError(f"{process.name} exited with {code}, not {expect}:\n" + _output_tail(process))
    return code


def stats_fields(lines: Sequence[str] | str, service: str) -> dict[str, str]:
    """The fields of the last stats line (InfluxDB line protocol) `service` logged, as
    text (`12i`, `0.5`); AssertionError if there is none."""
    text_lines = lines.splitlines() if isinstance(lines, str) else list(lines)
    marker = f"{service},"
    found = [line for line in text_lines if f"stddaq.stats: {marker}" in line]
    assert found, f"no stats line from {service}"
    field_text = found[-1].split(f"stddaq.stats: {marker}", 1)[1].split(" ")[1]
    return dict(item.split("=", 1) for item in field_text.split(",") if "=" in item)
