"""What the fake camera sends, in which order: pulse ids with the fault modes applied.

Pure logic. The camera counts pulse ids from `first_id`; `n_frames` ids are produced
(skipped ids count: the camera skipped them). Fault modes, by pulse id:

* skip: the id is never sent.
* duplicate: the id is sent twice in a row.
* wrong_shape: the id is sent with one extra image row (header and value agree).
* garbage: instead of the frame, a malformed message is sent (the id never arrives).
* reverse burst (start, length): ids start .. start+length-1 are sent in reverse order.
* restart_every N: after every N ids the camera starts again at `first_id` (the plan
  yields a RESTART marker there, so the camera can pause like a real restart).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field


class SendKind(enum.Enum):
    """What kind of message one send is."""

    FRAME = "frame"
    WRONG_SHAPE = "wrong_shape"
    GARBAGE = "garbage"
    RESTART = "restart"
    """Not a message: the camera restarts here (the ids go back to the first id)."""


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault modes by pulse id (see the module docstring)."""

    skip: frozenset[int] = frozenset()
    duplicate: frozenset[int] = frozenset()
    wrong_shape: frozenset[int] = frozenset()
    garbage: frozenset[int] = frozenset()
    reverse_bursts: tuple[tuple[int, int], ...] = field(default=())
    restart_every: int | None = None

    def burst_of(self, pulse_id: int) -> tuple[int, int] | None:
        """The reverse burst (start, length) containing `pulse_id`, if any."""
        for start, length in self.reverse_bursts:
            if start <= pulse_id < start + length:
                return start, length
        return None


def parse_ids(text: str) -> frozenset[int]:
    """`"5,7,10-12"` -> {5, 7, 10, 11, 12}; ValueError naming the bad item."""
    ids: set[int] = set()
    for item in filter(None, (piece.strip() for piece in text.split(","))):
        low, dash, high = item.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise ValueError(f"{item!r} is not an id or a range a-b") from None
        if first < 0 or last < first:
            raise ValueError(f"{item!r} is not a non-negative id or an increasing range a-b")
        ids.update(range(first, last + 1))
    return frozenset(ids)


def parse_burst(text: str) -> tuple[int, int]:
    """`"START:LENGTH"` -> (start, length); ValueError if it is not that."""
    start, colon, length = text.partition(":")
    try:
        burst = (int(start), int(length))
    except ValueError:
        raise ValueError(f"{text!r} is not START:LENGTH") from None
    if not colon or burst[0] < 0 or burst[1] < 2:
        raise ValueError(f"{text!r} needs START >= 0 and LENGTH >= 2")
    return burst


def _base_ids(first_id: int, n_frames: int | None, restart_every: int | None) -> Iterator[int | None]:
    """The camera's ids in order; None marks a restart."""
    index = 0
    while n_frames is None or index < n_frames:
        offset = index % restart_every if restart_every else index
        if index and offset == 0:
            yield None
        yield first_id + offset
        index += 1


def send_plan(first_id: int, n_frames: int | None, faults: Faults) -> Iterator[tuple[int, SendKind]]:
    """The sends in order: (pulse id, kind). Endless when `n_frames` is None."""
    held: list[int] = []
    held_burst: tuple[int, int] | None = None
    for pulse_id in _base_ids(first_id, n_frames, faults.restart_every):
        if pulse_id is None:
            yield from _sends(reversed(held), faults)
            held = []
            yield first_id, SendKind.RESTART
            continue
        burst = faults.burst_of(pulse_id)
        if held and burst != held_burst:
            yield from _sends(reversed(held), faults)
            held = []
        if burst is not None:
            held.append(pulse_id)
            held_burst = burst
            if pulse_id == burst[0] + burst[1] - 1:
                yield from _sends(reversed(held), faults)
                held = []
            continue
        yield from _sends([pulse_id], faults)
    yield from _sends(reversed(held), faults)


def _sends(ids: Iterator[int] | list[int], faults: Faults) -> Iterator[tuple[int, SendKind]]:
    for pulse_id in ids:
        if pulse_id in faults.skip:
            continue
        if pulse_id in faults.garbage:
            kind = SendKind.GARBAGE
        elif pulse_id in faults.wrong_shape:
            kind = SendKind.WRONG_SHAPE
        else:
            kind = SendKind.FRAME
        yield pulse_id, kind
        if pulse_id in faults.duplicate:
            yield pulse_id, kind
