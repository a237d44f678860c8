"""One supervised child process: start, prefixed output, readiness, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

READY_PREFIX = "READY "
"""The line every stddaq service prints once when it is ready (stddaq_common.runtime.runner)."""


@dataclass(frozen=True)
class ProcessSpec:
    """What to run for one service of the stack, and how to treat it."""

    name: str
    argv: list[str]
    wait_ready: bool = True
    restart: bool = True
    env: dict[str, str] = field(default_factory=dict)


class Child:
    """A running (or stopped) service process whose output is prefixed with its name."""

    def __init__(self, spec: ProcessSpec, output: TextIO = sys.stdout, width: int = 12) -> None:
        self.spec = spec
        self._output = output
        self._prefix = f"[{spec.name}]".ljust(width + 3)
        self._process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._pump: threading.Thread | None = None
        self.recent_lines: deque[str] = deque(maxlen=50)
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        """PID of the current process, None before the first start."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the process; its stdout and stderr are pumped, prefixed, to our output."""
        self._ready.clear()
        self._process = subprocess.Popen(
            self.spec.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.spec.env},
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        self._pump = threading.Thread(target=self._pump_output, name=f"pump-{self.spec.name}", daemon=True)
        self._pump.start()

    def _pump_output(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            self.recent_lines.append(line)
            if line.startswith(READY_PREFIX):
                self._ready.set()
            self._output.write(f"{self._prefix}{line}\n")
            self._output.flush()

    def wait_ready(self, timeout: float) -> bool:
        """Wait for the READY line (or, for specs without one, that it is still running)."""
        if not self.spec.wait_ready:
            return self.poll() is None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.1):
                return True
            if self.poll() is not None:
                return False
        return False

    @property
    def ready(self) -> bool:
        """Whether the current process has said READY."""
        return self._ready.is_set()

    def poll(self) -> int | None:
        """Exit code if the process has ended, else None."""
        return None if self._process is None else self._process.poll()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._pump is not None:
            self._pump.join(timeout=2)
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the process (tests use it to simulate a crash)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
