"""One child process of a stddaq service: start, read its output, wait for READY, stop.

Every stddaq service prints exactly one line `READY <name> ...` on stdout once it is ready
(stddaq_common.runtime.runner). `ChildProcess` starts a command, reads its output lines in
a thread (optionally echoing them with a prefix and appending them to a log file), notices
the READY line, and stops the process by its PID: SIGTERM (or another signal), a bounded
wait, then SIGKILL. `stddaq up` supervises its services with it; the test rigs and the
benchmarks start theirs with it (through stddaq_common.testing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TextIO

READY_PREFIX = "READY "
"""The line every stddaq service prints once when it is ready."""

MERGE = "merge"
"""`stderr=MERGE`: the child's stderr goes into the same pipe as its stdout."""


class ChildProcess:
    """A command run as a child process whose output lines are read in a thread.

    `stderr` is MERGE (one stream, as `stddaq up` shows it), a file path (stderr is
    written there; `stderr_text()` reads it) or None (inherited). `output`, when given,
    receives every line prefixed with `prefix`; `log_path`, when given, gets every line
    appended. `keep_lines` bounds the lines kept in `lines` (None: all of them).
    The process can be started again after it ended (`start()` once more).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        stderr: str | Path | None = MERGE,
        env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        output: TextIO | None = None,
        prefix: str = "",
        log_path: Path | None = None,
        keep_lines: int | None = None,
        cwd: str | Path | None = None,
        new_session: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.name = name or Path(self.argv[0]).name
        self._stderr = stderr
        self._env = dict(env or {})
        self._base_env = base_env
        self._output = output
        self._prefix = prefix
        self._log_path = log_path
        self._cwd = cwd
        self._new_session = new_session
        self.lines: deque[str] = deque(maxlen=keep_lines)
        """Output lines read so far (without their newline)."""
        self.ready_line: str | None = None
        """The READY line of the current process, once it came."""
        self.started_at = 0.0
        self._process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._ended = threading.Event()
        self._pump: threading.Thread | None = None
        self._started = False

    # --- starting and reading ---

    def start(self) -> ChildProcess:
        """Start the command (again, if it ran before); returns self."""
        # New events: the reader of an earlier run may still be finishing; it keeps its own.
        self._ready = threading.Event()
        self._ended = threading.Event()
        self.ready_line = None
        environment = dict(os.environ if self._base_env is None else self._base_env)
        environment.update({"PYTHONUNBUFFERED": "1", **self._env})
        stderr_file: IO[bytes] | None = None
        stderr: int | IO[bytes] | None = None
        if self._stderr == MERGE:
            stderr = subprocess.STDOUT
        elif self._stderr is not None:
            mode = "ab" if self._started else "wb"  # a restart appends to the first run's file
            stderr_file = open(self._stderr, mode)  # noqa: SIM115 (the child holds its own copy)
            stderr = stderr_file
        try:
            self._process = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
                env=environment,
                cwd=self._cwd,
                start_new_session=self._new_session,
            )
        finally:
            if stderr_file is not None:
                stderr_file.close()
        self.started_at = time.monotonic()
        self._started = True
        self._pump = threading.Thread(
            target=self._read_output,
            args=(self._process, self._ready, self._ended),
            name=f"pump-{self.name}",
            daemon=True,
        )
        self._pump.start()
        return self

    def _read_output(
        self, process: subprocess.Popen[str], ready: threading.Event, ended: threading.Event
    ) -> None:
        assert process.stdout is not None
        log = open(self._log_path, "a", encoding="utf-8") if self._log_path else None  # noqa: SIM115
        try:
            for raw in process.stdout:
                line = raw.rstrip("\n")
                self.lines.append(line)
                if not ready.is_set() and line.startswith(READY_PREFIX):
                    self.ready_line = line
                    ready.set()
                if log is not None:
                    log.write(raw if raw.endswith("\n") else raw + "\n")
                    log.flush()
                if self._output is not None:
                    self._output.write(f"{self._prefix}{line}\n")
                    self._output.flush()
        finally:
            if log is not None:
                log.close()
            process.stdout.close()
            ended.set()

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the READY line; False if it did not come (or the
        process ended first)."""
        deadline = time.monotonic() + timeout
        while not self._ready.is_set():
            remaining = deadline - time.monotonic()
            if self.poll() is not None:
                self._ended.wait(1.0)  # the last lines may still be in the pipe
                return self._ready.is_set()
            if remaining <= 0 or self._ended.is_set():
                return self._ready.is_set()
            self._ready.wait(min(remaining, 0.1))
        return True

    @property
    def ready(self) -> bool:
        """Whether the current process has printed its READY line."""
        return self._ready.is_set()

    def output_ended(self) -> bool:
        """Whether the process closed its output (it has ended, or is about to)."""
        return self._ended.is_set()

    def wait_output(self, timeout: float) -> bool:
        """Wait until every output line was read (the process closed stdout)."""
        return self._ended.wait(timeout)

    def stderr_text(self) -> str:
        """What the process wrote to its stderr file so far ("" without one)."""
        if self._stderr in (None, MERGE):
            return ""
        try:
            return Path(str(self._stderr)).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- state and stopping ---

    @property
    def pid(self) -> int | None:
        """PID of the current process, None before the first start."""
        return None if self._process is None else self._process.pid

    @property
    def popen(self) -> subprocess.Popen[str]:
        """The current process (AssertionError before the first start)."""
        assert self._process is not None, f"{self.name} was never started"
        return self._process

    def poll(self) -> int | None:
        """Exit code if the process has ended, else None."""
        return None if self._process is None else self._process.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end; its exit code (subprocess.TimeoutExpired if it
        does not end within `timeout`)."""
        code = self.popen.wait(timeout)
        if self._pump is not None:
            self._pump.join(timeout=5)
        return code

    def send_signal(self, signum: int) -> None:
        """Send `signum` to the process by its PID, if it still runs."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signum)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Send `sig` (SIGTERM), wait up to `timeout`, then SIGKILL; the exit code (None if
        it was never started)."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            os.kill(process.pid, sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                process.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the process by its PID (a crash, or the last resort of stop())."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
