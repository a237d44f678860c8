"""Supervise the services of one detector: start in order, restart with back-off, stop clean."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from stddaq_stack.child import Child, ProcessSpec
from stddaq_stack.proc_stats import cpu_seconds, private_rss_bytes

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0
"""A child that ran this long before it died starts again from the first back-off."""


class StackError(RuntimeError):
    """The stack could not be started (a service failed before it was ready)."""


@dataclass
class StatusRow:
    """One line of the status table."""

    name: str
    pid: int | None
    state: str
    restarts: int
    rss_mb: float | None
    cpu_s: float | None


@dataclass
class _Supervised:
    child: Child
    restarts: int = 0
    backoff: float = FIRST_BACKOFF
    restart_at: float | None = None
    last_exit: int | None = None


class Supervisor:
    """Runs a list of ProcessSpecs as children and keeps them running."""

    def __init__(
        self,
        specs: list[ProcessSpec],
        *,
        output: TextIO = sys.stdout,
        ready_timeout: float = 60.0,
        on_restart: Callable[[str, int | None], None] | None = None,
    ) -> None:
        width = max((len(spec.name) for spec in specs), default=8)
        self._services = [_Supervised(Child(spec, output, width)) for spec in specs]
        self._output = output
        self._ready_timeout = ready_timeout
        self._on_restart = on_restart
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        """Print a supervisor line."""
        self._output.write(f"[stack] {text}\n")
        self._output.flush()

    def start(self) -> None:
        """Start every service in order, each after the previous one said READY."""
        for service in self._services:
            child = service.child
            child.start()
            if not child.wait_ready(self._ready_timeout):
                code = child.poll()
                detail = f"exited with {code}" if code is not None else "did not become ready"
                last = "; ".join(list(child.recent_lines)[-3:])
                self.stop()
                raise StackError(f"{child.spec.name} {detail}" + (f": {last}" if last else ""))
            self.say(f"{child.spec.name} ready (pid {child.pid})")

    def tick(self) -> None:
        """Notice ended children and restart them with exponential back-off."""
        now = time.monotonic()
        with self._lock:
            for service in self._services:
                child = service.child
                if service.restart_at is not None:
                    if now >= service.restart_at:
                        service.restart_at = None
                        service.restarts += 1
                        child.start()
                        self.say(f"{child.spec.name} restarted (pid {child.pid}, restart {service.restarts})")
                    continue
                code = child.poll()
                if code is None or not child.spec.restart:
                    continue
                service.last_exit = code
                if now - child.started_at >= STABLE_AFTER:
                    service.backoff = FIRST_BACKOFF
                service.restart_at = now + service.backoff
                self.say(f"{child.spec.name} exited with {code}; restarting in {service.backoff:.0f} s")
                service.backoff = min(service.backoff * 2, MAX_BACKOFF)
                if self._on_restart is not None:
                    self._on_restart(child.spec.name, code)

    def rows(self) -> list[StatusRow]:
        """The current state of every service."""
        rows = []
        for service in self._services:
            child = service.child
            pid = child.pid
            running = pid is not None and child.poll() is None
            if service.restart_at is not None:
                state = f"restarting (exit {service.last_exit})"
            elif running:
                state = "ready" if child.ready or not child.spec.wait_ready else "starting"
            else:
                state = f"exited ({child.poll()})" if pid is not None else "not started"
            rss = private_rss_bytes(pid) if running and pid is not None else None
            cpu = cpu_seconds(pid) if running and pid is not None else None
            rows.append(
                StatusRow(
                    child.spec.name,
                    pid if running else None,
                    state,
                    service.restarts,
                    None if rss is None else rss / 2**20,
                    cpu,
                )
            )
        return rows

    def table(self) -> str:
        """The status table as text: service, pid, state, restarts, memory outside the ring, CPU."""
        header = f"{'service':<16}{'pid':>8}  {'state':<24}{'restarts':>8}{'RSS MB':>9}{'CPU s':>9}"
        lines = [header]
        for row in self.rows():
            rss = "-" if row.rss_mb is None else f"{row.rss_mb:.0f}"
            cpu = "-" if row.cpu_s is None else f"{row.cpu_s:.1f}"
            pid = "-" if row.pid is None else str(row.pid)
            lines.append(f"{row.name:<16}{pid:>8}  {row.state:<24}{row.restarts:>8}{rss:>9}{cpu:>9}")
        return "\n".join(lines)

    def child(self, name: str) -> Child:
        """The child of a service by name."""
        for service in self._services:
            if service.child.spec.name == name:
                return service.child
        raise KeyError(name)

    def run(self, stop: threading.Event, status_every: float = 30.0) -> None:
        """Supervise until `stop` is set, printing the status table every `status_every` s."""
        next_table = time.monotonic() + status_every
        while not stop.wait(0.2):
            self.tick()
            if status_every > 0 and time.monotonic() >= next_table:
                self.say("status\n" + self.table())
                next_table = time.monotonic() + status_every

    def stop(self, timeout: float = 10.0) -> dict[str, int | None]:
        """Stop every service in reverse start order; returns their exit codes."""
        codes: dict[str, int | None] = {}
        with self._lock:
            for service in reversed(self._services):
                service.restart_at = None
                codes[service.child.spec.name] = service.child.stop(timeout)
        return codes
