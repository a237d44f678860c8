"""Sending images straight from their ring slots (zero-copy), never a torn one on the wire.

ZeroMQ sends a zero-copy frame later, from its I/O thread, and a queued message cannot be
taken back. So an image goes out from its slot only while the ring's single writer is far
from reaching that slot again, and the frame is tracked until ZeroMQ is done with it:

- Only an image at least three quarters of a ring ahead of its overwrite (`image_id +
  n_slots - last_written_id > 3/4 n_slots`, i.e. among the newest quarter of the ring) of
  a verified ring (stddaq's seqlock) is sent this way,
  and at most `max_in_flight` (64) such frames are queued at once; every other image takes
  the copy path (image_copy.py).
- `reap()` runs for every metadata message and at least ten times a second: a finished
  frame's slot is checked with `still_valid()` (a change there would mean a torn image
  went out: counted as `torn_on_wire`, logged as an error; the margins make it never
  happen), and an unfinished frame whose slot the writer is within half a ring of
  overwriting makes `reap()` return True: the caller closes the viewers' socket (LINGER 0
  discards every queued message; viewers reconnect by themselves) before the slot changes.

What remains: a live stream not scheduled at all while the writer goes through half of
the ring (at 1000 images/s and 1000 slots, 500 ms) with a frame still queued; the check
after the send counts that case, it is not silent. And a segment that another
program shrinks while a frame is queued (a std_daq service with another config): the
size is checked before each send and twice a second, and the queue is dropped when it
changed, but ZeroMQ's I/O thread may read the lost pages in between (SIGBUS); with the
copy the same window is the copy itself.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import zmq

from stddaq_common.ring.image_ring import ImageRing, SlotView

log = logging.getLogger(__name__)

MIN_ZERO_COPY_BYTES = 64 * 1024
"""Smaller images are copied: cheaper than tracking a zero-copy frame."""

DEFAULT_MAX_IN_FLIGHT = 64


@dataclass(slots=True)
class _InFlight:
    view: SlotView
    tracker: zmq.MessageTracker


class SlotSender:
    """Zero-copy frames of ring slots, tracked until ZeroMQ no longer reads them."""

    def __init__(self, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self.max_in_flight = max_in_flight
        self._in_flight: deque[_InFlight] = deque()
        self.torn_on_wire = 0
        """Frames whose slot changed before ZeroMQ was done with them (must stay 0)."""

    @property
    def in_flight(self) -> int:
        """Zero-copy frames ZeroMQ may still read from their slots."""
        return len(self._in_flight)

    def can_send(self, view: SlotView, ring: ImageRing) -> bool:
        """True if this image may go out straight from its slot (see the module doc)."""
        if self.max_in_flight <= 0 or view.nbytes < MIN_ZERO_COPY_BYTES or not ring.verified:
            return False
        if len(self._in_flight) >= self.max_in_flight:
            return False
        n_slots = ring.geometry.n_slots
        return view.image_id + n_slots - ring.last_written_id > n_slots - n_slots // 4

    def frame(self, view: SlotView) -> zmq.Frame:
        """A tracked zero-copy frame of the slot's bytes (call `unsent()` if it is not sent)."""
        frame = zmq.Frame(view.data, copy=False, track=True)
        self._in_flight.append(_InFlight(view, frame.tracker))
        return frame

    def unsent(self) -> None:
        """The last frame was not sent (ZeroMQ refused it): stop tracking it."""
        if self._in_flight:
            self._in_flight.pop()

    def reap(self, ring: ImageRing | None) -> bool:
        """Check the frames ZeroMQ is done with; True if a queued frame's slot is about to be
        overwritten (or the ring was resized): the caller must drop the queue now."""
        if not self._in_flight:
            return False
        if ring is None or ring.resized or not ring.check_size():
            return True
        # ZeroMQ finishes messages in the order they were sent (each viewer's queue is a
        # FIFO), so the oldest unfinished frame is the one nearest to its overwrite.
        in_flight = self._in_flight
        while in_flight and in_flight[0].tracker.done:
            item = in_flight.popleft()
            if not item.view.still_valid():
                self.torn_on_wire += 1
                log.error("image %d was overwritten while ZeroMQ sent it from its slot", item.view.image_id)
        if not in_flight:
            return False
        n_slots = ring.geometry.n_slots
        return in_flight[0].view.image_id + n_slots - ring.last_written_id <= n_slots // 2

    def dropped(self) -> None:
        """The queue was discarded (socket closed): nothing of it is sent any more."""
        self._in_flight.clear()
