"""Files a previous driver process left open, found through the writers' heartbeats.

A writer's heartbeat carries the id of the acquisition whose file it holds. A driver that
was restarted (crashed, killed) during an acquisition knows nothing of that acquisition:
when it is idle and a writer reports a file of an acquisition this process never started,
the driver asks that writer to close it (keeping every image it holds) and says so in
the status. Pure bookkeeping: the engine sends the messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stddaq_common.bus.driver_writer import WriterEvent


def orphan_reason(acq_id: int) -> str:
    """The close reason of a file a previous driver process left open."""
    return (
        f"the driver restarted during acquisition {acq_id}; the file was closed with the "
        "images written before"
    )


@dataclass
class Orphans:
    """Acquisitions of earlier driver processes that writers still hold files of."""

    started: set[int] = field(default_factory=set)
    """Acquisitions this driver process started (never orphans)."""
    asked: dict[int, set[int]] = field(default_factory=dict)
    """Orphan acquisition -> writers asked to close its file."""
    closed: dict[int, dict[int, tuple[str, int]]] = field(default_factory=dict)
    """Orphan acquisition -> writer -> (file it closed, images written in it)."""

    def needs_close(self, event: WriterEvent) -> bool:
        """True (once per writer) for a heartbeat naming an acquisition this process did
        not start: that writer must be asked to close its file."""
        acq_id = event.acq_id
        if event.event != "heartbeat" or acq_id is None or acq_id in self.started:
            return False
        writers = self.asked.setdefault(acq_id, set())
        if event.writer in writers:
            return False
        writers.add(event.writer)
        return True

    def is_new(self, acq_id: int) -> bool:
        """True if only one writer was asked about this orphan so far (count it once)."""
        return len(self.asked.get(acq_id, ())) == 1

    def took_close(self, event: WriterEvent) -> bool:
        """Record a writer's `closed` answer for an orphan; True if it was one."""
        acq_id = event.acq_id
        if event.event != "closed" or acq_id is None or event.writer not in self.asked.get(acq_id, ()):
            return False
        self.closed.setdefault(acq_id, {})[event.writer] = (event.file or "?", event.written or 0)
        return True

    def summary(self, acq_id: int) -> str:
        """The status text of an orphan acquisition."""
        done = self.closed.get(acq_id, {})
        files = "; ".join(f"writer {k}: {done[k][0]}, {done[k][1]} images written" for k in sorted(done))
        return f"{orphan_reason(acq_id)} ({files or 'closing'})"

    def files(self, acq_id: int) -> tuple[str, ...]:
        """The files closed so far for an orphan acquisition, in writer order."""
        done = self.closed.get(acq_id, {})
        return tuple(done[k][0] for k in sorted(done))
