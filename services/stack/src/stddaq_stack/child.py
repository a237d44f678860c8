"""One supervised service of the stack: what to run (ProcessSpec) and its process (Child).

The process itself is stddaq_common.runtime.child_process.ChildProcess, the same class the
test rigs and benchmarks use: start, output prefixed with the service's name, READY, stop.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

from stddaq_common.runtime.child_process import MERGE, READY_PREFIX, ChildProcess

__all__ = ["READY_PREFIX", "Child", "ProcessSpec"]


@dataclass(frozen=True)
class ProcessSpec:
    """What to run for one service of the stack, and how to treat it."""

    name: str
    argv: list[str]
    wait_ready: bool = True
    restart: bool = True
    env: dict[str, str] = field(default_factory=dict)


class Child(ChildProcess):
    """A service process of the stack: its output, prefixed with its name, goes to `output`."""

    def __init__(self, spec: ProcessSpec, output: TextIO = sys.stdout, width: int = 12) -> None:
        super().__init__(
            spec.argv,
            name=spec.name,
            stderr=MERGE,
            env=spec.env,
            output=output,
            prefix=f"[{spec.name}]".ljust(width + 3),
            keep_lines=50,
            new_session=True,
        )
        self.spec = spec

    @property
    def recent_lines(self) -> list[str]:
        """The last (up to 50) output lines."""
        return list(self.lines)

    def start(self) -> Child:
        """Start the service's process (again, after it ended)."""
        super().start()
        return self

    def wait_ready(self, timeout: float) -> bool:
        """Wait for the READY line (or, for specs without one, that it is still running)."""
        if not self.spec.wait_ready:
            return self.poll() is None
        return super().wait_ready(timeout)
