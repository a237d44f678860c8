"""Holding back a connection whose next frame lies a whole reorder window ahead.

With N PULL connections, ZeroMQ deals the camera's frames round-robin, but each
connection buffers on its own (ZeroMQ queues and TCP buffers: hundreds of small frames),
so under overload the connections drift apart in id: one delivers frames far ahead of the
ids another one still has queued. Accepting such a frame would move the reorder window
past ids that are only late, not lost (they would be dropped as late frames, or an old one
taken for a camera restart). Instead the frame is parked and its connection is no longer
read; the others are read until the window has moved up to it. Each connection delivers
its frames in the camera's order, so reading the lagging ones is what fills the gap, and
the camera's PUSH socket, finding the parked connection full, deals to the others.

A parked frame is let in when the window has moved up to it; when every connection has a
frame parked (nothing can fill the gap any more: the ids are missing, given up at once);
or when its wait passes the reorder timeout while the other connections are idle (or the
hard timeout). Pure bookkeeping: the pipeline decides and processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from stddaq_receiver.inputs import IncomingFrame

_NONE: frozenset[int] = frozenset()


@dataclass(slots=True)
class Parked:
    """A frame held back, and since when (monotonic seconds)."""

    frame: IncomingFrame
    since: float


class ParkingLot:
    """At most one parked frame per connection (source index 0..sources-1)."""

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self.parked: dict[int, Parked] = {}
        """The parked frames by connection (read-only for callers)."""

    def __len__(self) -> int:
        return len(self.parked)

    @property
    def parked_sources(self) -> frozenset[int]:
        """The connections not to be read now."""
        return frozenset(self.parked) if self.parked else _NONE

    def may_park(self) -> bool:
        """True while another connection could still deliver the ids below a parked frame."""
        return len(self.parked) + 1 < self.sources

    def park(self, source: int, frame: IncomingFrame, now: float) -> None:
        """Hold `frame` back; `source` is not read until it is let in."""
        self.parked[source] = Parked(frame, now)

    def lowest(self) -> Parked | None:
        """The parked frame with the lowest id (the next to let in), or None."""
        if not self.parked:
            return None
        return min(self.parked.values(), key=lambda parked: parked.frame.image_id)

    def take(self, parked: Parked) -> IncomingFrame:
        """Remove a parked frame (from `lowest()`); its connection is read again."""
        for source, held in self.parked.items():
            if held is parked:
                del self.parked[source]
                break
        return parked.frame

    def take_all(self) -> list[IncomingFrame]:
        """Every parked frame, lowest id first; all connections are read again."""
        frames = sorted((parked.frame for parked in self.parked.values()), key=lambda f: f.image_id)
        self.parked.clear()
        return frames
