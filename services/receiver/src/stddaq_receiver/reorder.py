"""The reordering window: frames arrive out of order, metadata leaves in increasing id order.

Pure logic (no sockets, no threads, no clock: callers pass `now`). One frame goes through

    arrive(id, now)  ->  ACCEPTED / RESTARTED: write its slot, then complete(id, item)
                                               (or abandon(id) if it was rejected)
                     ->  DUPLICATE / LATE:     drop it, do not touch its slot
    release(now, idle) -> the items that may be published now, in strictly increasing id order

Rules (`size` ids, `timeout` seconds; the caller keeps `size` well below the ring's slot
count so that a slot waiting for publication is never overwritten):

* Sequence start (first frame, or after a restart): the window does not know the first id,
  so it holds frames until the first one has waited out the timeout (or `size` frames are
  waiting, or a frame `size` or more ids above the lowest arrives) and then starts at the
  lowest id received.
* An id is released when every lower id has been released, rejected or given up.
* A missing id is given up (counted in `missing`, each run of them in `gaps`) when a frame
  above it has waited out the timeout, or when a frame `size` or more ids above it
  arrives (the window never spans more than `size` ids).
* Timeouts: `timeout` seconds count only once the caller says its input is idle (every
  queue drained: the missing frame is not just waiting in another connection's queue
  behind a busy receiver); `hard_timeout` (default 5 x timeout) applies regardless.
* An id that was released, rejected or is waiting already is a DUPLICATE; one that was
  given up as missing is LATE. Both are dropped and counted; their slot is not touched.
* Restart: an id more than `size` below the next expected id starts a new sequence. The
  old one is closed first (its finished frames are released, its gaps counted missing),
  then the window starts over at the new ids. An id at most `size` below looks like a
  duplicate (or late frame) and is dropped: a camera that restarts only a few ids back
  loses those few frames until it passes its old position.
* A frame still being written when the window has to move past it (restart, or a jump of
  `size` ids) is dropped when it completes and counted in `orphaned`: publishing it then
  would break the order.

Nothing waits forever: every wait is bounded by `hard_timeout` or by `size` ids.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")

_RECENT_GAPS = 256
"""How many recent runs of missing ids are remembered to tell LATE from DUPLICATE."""


class Arrival(enum.Enum):
    """What to do with a frame that just arrived."""

    ACCEPTED = "accepted"
    """Write its slot, then call complete() (or abandon() if the frame is rejected)."""
    RESTARTED = "restarted"
    """Like ACCEPTED; the previous sequence was closed first (camera restart)."""
    DUPLICATE = "duplicate"
    """Already waiting, released or rejected: drop it."""
    LATE = "late"
    """Already given up as missing: drop it."""

    @property
    def accepted(self) -> bool:
        """True when the caller should write the frame."""
        return self in (Arrival.ACCEPTED, Arrival.RESTARTED)


class _State(enum.Enum):
    """What the window holds for an id that has no item (yet): being written, or rejected.
    A finished frame's entry is its item itself (no object per frame)."""

    IN_FLIGHT = 0
    ABANDONED = 2


_IN_FLIGHT = _State.IN_FLIGHT
_ABANDONED = _State.ABANDONED
_ABSENT: Any = object()
"""`dict.get` default: no entry (an item may be anything, None included)."""


@dataclass(slots=True)
class WindowCounters:
    """What the window has counted since it was created."""

    released: int = 0
    """Items handed out by release()/close()."""
    missing: int = 0
    """Ids given up because they never arrived in time."""
    gaps: int = 0
    """Runs of consecutive missing ids."""
    duplicates: int = 0
    """Frames dropped because their id was already waiting, released or rejected."""
    late: int = 0
    """Frames dropped because their id had been given up as missing."""
    restarts: int = 0
    """Sequences closed because an id jumped back by more than the window."""
    abandoned: int = 0
    """Accepted frames the caller rejected (not counted as missing)."""
    orphaned: int = 0
    """Frames still being written when the window moved past them (dropped on completion)."""


class ReorderWindow(Generic[Item]):
    """Bounded reordering of image ids; see the module docstring for the rules."""

    def __init__(self, size: int, timeout: float, hard_timeout: float | None = None) -> None:
        if size < 1:
            raise ValueError(f"reorder window size must be >= 1, got {size}")
        if timeout <= 0:
            raise ValueError(f"reorder timeout must be > 0 s, got {timeout}")
        self.size = size
        self.timeout = timeout
        self.hard_timeout = max(timeout, hard_timeout if hard_timeout is not None else 5 * timeout)
        self.counters = WindowCounters()
        self._next: int | None = None
        self._low = 0
        """At a sequence start (next_id None): the lowest id received so far."""
        self._entries: dict[int, Item | _State] = {}
        """Per open id: _IN_FLIGHT, _ABANDONED, or the finished frame's item."""
        self._arrivals: deque[tuple[float, int]] = deque()
        self._ready: list[Item] = []
        self._orphans: set[int] = set()
        self._recent_gaps: deque[tuple[int, int]] = deque(maxlen=_RECENT_GAPS)

    @property
    def next_id(self) -> int | None:
        """The lowest id not yet released or given up (None at the start of a sequence)."""
        return self._next

    @property
    def has_released(self) -> bool:
        """True when arrive() moved the window and items wait to be taken by release()."""
        return bool(self._ready)

    @property
    def waiting(self) -> int:
        """Frames received (or being written) and not yet released."""
        return len(self._entries)

    def beyond(self, image_id: int) -> bool:
        """True if accepting `image_id` would give up open ids: it lies `size` or more above
        the lowest id not yet released (at a sequence start: the lowest id received)."""
        low = self._next
        if low is None:
            if not self._entries:
                return False
            low = self._low
        return image_id >= low + self.size

    def restarts_at(self, image_id: int) -> bool:
        """True if `image_id` would be taken for a camera restart (more than `size` below the
        next expected id)."""
        return self._next is not None and self._next - image_id > self.size

    def arrive(self, image_id: int, now: float) -> Arrival:
        """Register a frame that just arrived and say whether to write it."""
        if image_id in self._entries or image_id in self._orphans:
            self.counters.duplicates += 1
            return Arrival.DUPLICATE
        verdict = Arrival.ACCEPTED
        next_id = self._next
        if next_id is not None and image_id < next_id:
            if next_id - image_id <= self.size:
                if self._was_given_up(image_id):
                    self.counters.late += 1
                    return Arrival.LATE
                self.counters.duplicates += 1
                return Arrival.DUPLICATE
            self._close_sequence()
            self._recent_gaps.clear()
            self.counters.restarts += 1
            verdict = Arrival.RESTARTED
        self._entries[image_id] = _IN_FLIGHT
        self._arrivals.append((now, image_id))
        if self._next is None:  # sequence start: never span more than `size` ids either
            self._low = image_id if len(self._entries) == 1 else min(self._low, image_id)
            if image_id >= self._low + self.size:
                self._next = self._low
                self._give_up_below(image_id - self.size + 1)
        elif image_id >= self._next + self.size:
            self._give_up_below(image_id - self.size + 1)
        return verdict

    def complete(self, image_id: int, item: Item) -> bool:
        """The frame's slot is written; `item` is published when its turn comes.

        Returns False when the frame was orphaned (dropped; see the module docstring).
        """
        if self._orphans and self._drop_orphan(image_id):
            return False
        entries = self._entries
        if entries.get(image_id, _ABSENT) is not _IN_FLIGHT:
            raise KeyError(f"image id {image_id} was not accepted or is already finished")
        entries[image_id] = item
        return True

    def abandon(self, image_id: int) -> None:
        """The accepted frame was rejected: skip its id without counting it missing."""
        if self._drop_orphan(image_id):
            return
        if self._entries.get(image_id, _ABSENT) is not _IN_FLIGHT:
            raise KeyError(f"image id {image_id} was not accepted or is already finished")
        self._entries[image_id] = _ABANDONED
        self.counters.abandoned += 1

    def release(self, now: float, idle: bool = False) -> list[Item]:
        """Items that may be published now, in increasing id order (often none).

        `idle`: the caller's input queues are drained, so `timeout` applies (else only
        `hard_timeout`).
        """
        limit = self.timeout if idle else self.hard_timeout
        if self._next is None and not self._start_sequence(now, limit):
            return self._take_ready()
        self._drain()
        entries = self._entries
        while entries and self._next not in entries and self._head_timed_out(now, limit):
            self._give_up_below(min(entries))
            self._drain()
        ready = self._ready
        if ready:
            self._ready = []
            self.counters.released += len(ready)
        return ready

    def close(self) -> list[Item]:
        """End of the stream: release every finished frame, give up the gaps between them."""
        self._close_sequence()
        return self._take_ready()

    # --- internals ---

    def _take_ready(self) -> list[Item]:
        ready = self._ready
        if ready:
            self._ready = []
            self.counters.released += len(ready)
        return ready

    def _drop_orphan(self, image_id: int) -> bool:
        if image_id in self._orphans:
            self._orphans.discard(image_id)
            self.counters.orphaned += 1
            return True
        return False

    def _start_sequence(self, now: float, limit: float) -> bool:
        """At a sequence start, pick the first id once the start grace is over."""
        if not self._entries:
            return False
        first_arrival = self._arrivals[0][0]
        if now - first_arrival < limit and len(self._entries) < self.size:
            return False
        self._next = min(self._entries)
        self._give_up_below(max(self._entries) - self.size + 1)
        return True

    def _drain(self) -> None:
        """Release the finished frames at the head, in order."""
        entries = self._entries
        next_id = self._next
        assert next_id is not None
        ready = self._ready
        while True:
            entry = entries.get(next_id, _ABSENT)
            if entry is _ABSENT or entry is _IN_FLIGHT:
                break
            del entries[next_id]
            if entry is not _ABANDONED:
                ready.append(entry)  # type: ignore[arg-type]
            next_id += 1
        self._next = next_id
        arrivals = self._arrivals
        while arrivals and arrivals[0][1] not in entries:
            arrivals.popleft()

    def _head_timed_out(self, now: float, limit: float) -> bool:
        """True when the oldest waiting frame has waited `limit` s for the ids below it."""
        arrivals = self._arrivals
        while arrivals and arrivals[0][1] not in self._entries:
            arrivals.popleft()
        return bool(arrivals) and now - arrivals[0][0] >= limit

    def _give_up_below(self, floor: int) -> None:
        """Move the window to `floor`: finished frames below it are released, absent ids are
        counted missing, frames still being written become orphans."""
        next_id = self._next
        assert next_id is not None
        if floor <= next_id:
            return
        below = sorted(image_id for image_id in self._entries if image_id < floor)
        cursor = next_id
        for image_id in below:
            self._count_gap(cursor, image_id)
            entry = self._entries.pop(image_id)
            if entry is _IN_FLIGHT:
                self._orphans.add(image_id)
            elif entry is not _ABANDONED:
                self._ready.append(entry)  # type: ignore[arg-type]
            cursor = image_id + 1
        self._count_gap(cursor, floor)
        self._next = floor

    def _count_gap(self, start: int, end: int) -> None:
        if end > start:
            self.counters.missing += end - start
            self.counters.gaps += 1
            self._recent_gaps.append((start, end))

    def _was_given_up(self, image_id: int) -> bool:
        return any(start <= image_id < end for start, end in self._recent_gaps)

    def _close_sequence(self) -> None:
        """Release everything finished, give up the rest, and forget the sequence."""
        if self._entries:
            if self._next is None:
                self._next = min(self._entries)
            self._give_up_below(max(self._entries) + 1)
        self._entries.clear()
        self._arrivals.clear()
        self._next = None
