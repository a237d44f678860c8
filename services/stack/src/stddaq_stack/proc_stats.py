"""Per-process figures read from /proc: memory outside shared memory, CPU seconds."""

from __future__ import annotations

import os

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def private_rss_bytes(pid: int) -> int | None:
    """Resident memory of a process outside shared-memory mappings (RssAnon + RssFile).

    The ring buffer lives in /dev/shm and shows up as RssShmem; it is left out so the
    figure says what the service itself costs. None if the process is gone.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except OSError:
        return None
    try:
        return (int(fields["RssAnon"].split()[0]) + int(fields["RssFile"].split()[0])) * 1024
    except (KeyError, ValueError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
