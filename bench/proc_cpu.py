"""User and system CPU seconds of a process, from /proc/<pid>/stat (utime, stime)."""

from __future__ import annotations

import os
from dataclasses import dataclass

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """CPU seconds in user and in system (kernel) mode."""

    user: float = 0.0
    system: float = 0.0

    @property
    def total(self) -> float:
        """User + system seconds."""
        return self.user + self.system

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.system - other.system)

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user + other.user, self.system + other.system)


def cpu_times(pid: int) -> CpuTimes | None:
    """User and system CPU seconds the process has used so far (all its threads); None if
    it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return CpuTimes(int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS)


def times_delta(before: dict[str, CpuTimes], after: dict[str, CpuTimes]) -> dict[str, CpuTimes]:
    """CPU each process used between two readings (processes present in `after`)."""
    return {name: value - before.get(name, CpuTimes()) for name, value in after.items()}
