"""Sending images straight from their ring slots (zero-copy), never a torn one on the wire.

ZeroMQ sends a zero-copy frame later, from its I/O thread, and a queued message cannot be
taken back. So an image goes out from its slot only while the ring's single writer is far
from reaching that slot again, and the frame is tracked until ZeroMQ is done with it:

- Only an image at least three quarters of a ring ahead of its overwrite (`image_id +
  n_slots - last_written_id > 3/4 n_slots`, i.e. among the newest quarter of the ring) of
  a verified ring (stddaq's seqlock) is sent this way,
  and at most `max_in_flight` (64) such frames are queued at once; every other image takes
  the copy path (image_copy.py).
- `reap()` runs for every metadata message (a cheap look at the oldest queued frame) and
  fully ten times a second: a finished frame's slot is checked with `still_valid()` (a
  change there would mean a torn image went out: counted as `torn_on_wire`, logged as an
  error; the margins make it never happen), and an unfinished frame whose slot the writer
  is within half a ring of overwriting makes `reap()` return True: the caller closes the
  viewers' socket (LINGER 0 discards every queued message; viewers reconnect by
  themselves) before the slot changes. The release notices are read at every reap while
  frames are queued (one read of a pipe): a finished frame's slot is checked right after
  ZeroMQ let go of it. (Reading them only when due, tried once, checked a frame that had
  gone out whole only after the writer had reached its slot on a loaded machine, which
  counted it as torn: the counter must mean what it says.)

What remains: a live stream not scheduled at all while the writer goes through half of
the ring (at 1000 images/s and 1000 slots, 500 ms) with a frame still queued; the check
after the send counts that case, it is not silent. And a segment that another
program shrinks while a frame is queued (a std_daq service with another config): the
size is checked before each send and ten times a second, and the queue is dropped when
it changed, but ZeroMQ's I/O thread may read the lost pages in between (SIGBUS); with the
copy the same window is the copy itself.

How ZeroMQ says it is done with a frame: where libzmq's C functions are reachable, the
slot is sent as a tracked libzmq message (stddaq_common.bus.pinned_send): the I/O thread
writes the slot's key into a pipe when it lets go of it, read here at each reap, so a
frame costs no Python thread wake-up. Keys are the low 32 bits of the slot's address:
an image whose key is already queued (or still owed a release after the queue was
dropped) takes the copy path. Elsewhere pyzmq's MessageTracker says it, as before.
Either way the slot view is held until ZeroMQ let go of it, so the ring stays mapped.
"""

from __future__ import annotations

import logging

import zmq

from stddaq_common.bus.pinned_send import (
    PinnedBuffer,
    ReleaseNotices,
    release_key,
    release_notices,
)
from stddaq_common.ring.image_ring import ImageRing, SlotView

log = logging.getLogger(__name__)

MIN_ZERO_COPY_BYTES = 64 * 1024
"""Smaller images are copied: cheaper than tracking a zero-copy frame."""

DEFAULT_MAX_IN_FLIGHT = 64


class SlotSender:
    """Zero-copy frames of ring slots, tracked until ZeroMQ no longer reads them."""

    def __init__(self, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, *, native: bool = True) -> None:
        self.max_in_flight = max_in_flight
        self._notices: ReleaseNotices | None = release_notices() if native else None
        # In the order sent; keyed by release key (native) or a running number (pyzmq).
        self._in_flight: dict[int, SlotView] = {}
        self._trackers: dict[int, zmq.MessageTracker] = {}
        """pyzmq's trackers of the frames in flight (fallback only; same keys)."""
        self._owed: dict[int, SlotView] = {}
        """Native frames of a dropped queue whose release has not come yet."""
        self._serial = 0
        self._last_key: int | None = None
        self.torn_on_wire = 0
        """Frames whose slot changed before ZeroMQ was done with them (must stay 0)."""

    @property
    def native(self) -> bool:
        """True if frames go to libzmq directly (released through the notice pipe)."""
        return self._notices is not None

    @property
    def in_flight(self) -> int:
        """Zero-copy frames ZeroMQ may still read from their slots (queued, or of a dropped
        queue and not yet let go of), as of the last `reap`."""
        return len(self._in_flight) + len(self._owed)

    def can_send(self, view: SlotView, ring: ImageRing) -> bool:
        """True if this image may go out straight from its slot (see the module doc)."""
        if self.max_in_flight <= 0 or view.nbytes < MIN_ZERO_COPY_BYTES or not ring.verified:
            return False
        if len(self._in_flight) + len(self._owed) >= self.max_in_flight:
            return False
        n_slots = ring.geometry.n_slots
        return view.image_id + n_slots - ring.last_written_id > n_slots - n_slots // 4

    def take(self, view: SlotView) -> bool:
        """Native: track the slot of `view` as about to be sent (call `unsent()` if it is
        not); False if its release key is taken (copy this one instead)."""
        key = release_key(view.address)
        if key in self._in_flight or key in self._owed:
            return False
        self._in_flight[key] = view
        self._last_key = key
        return True

    def frame(self, view: SlotView) -> zmq.Frame | PinnedBuffer | None:
        """A tracked zero-copy frame of the slot's bytes (call `unsent()` if it is not
        sent); None if its release key is taken (copy this one instead)."""
        if self._notices is None:
            frame = zmq.Frame(view.data, copy=False, track=True)
            self._serial += 1
            self._in_flight[self._serial] = view
            self._trackers[self._serial] = frame.tracker
            self._last_key = self._serial
            return frame
        if not self.take(view):
            return None
        return PinnedBuffer(view.address, view.nbytes, view.data, tracked=True)

    def unsent(self) -> None:
        """The last frame was not sent (ZeroMQ refused it): stop tracking it."""
        # ZeroMQ refuses a message at its first part, the header: the frame never
        # reached libzmq, so no release notice will come for it.
        if self._last_key is not None:
            self._in_flight.pop(self._last_key, None)
            self._trackers.pop(self._last_key, None)
            self._last_key = None

    def failed(self) -> None:
        """Native: sending the last frame failed (ZMQError): whether libzmq holds it is
        unknown, so its key stays owed until a release for it comes (maybe never: that
        slot is then always copied, never mistaken for a newer frame's)."""
        if self._last_key is not None and self._notices is not None:
            view = self._in_flight.pop(self._last_key, None)
            if view is not None:
                self._owed[self._last_key] = view
        self._last_key = None

    def _collect(self) -> None:
        """Finish the frames ZeroMQ let go of (check their slots)."""
        in_flight = self._in_flight
        if self._notices is not None:
            for key in self._notices.drain():
                view = in_flight.pop(key, None)
                if view is None:
                    self._owed.pop(key, None)
                    continue
                self._finished(view)
            return
        # ZeroMQ finishes pyzmq frames in the order they were sent (each viewer's queue
        # is a FIFO): pop the finished ones from the front.
        trackers = self._trackers
        for key in list(in_flight):
            if not trackers[key].done:
                break
            del trackers[key]
            self._finished(in_flight.pop(key))

    def _finished(self, view: SlotView) -> None:
        if not view.still_valid():
            self.torn_on_wire += 1
            log.error("image %d was overwritten while ZeroMQ sent it from its slot", view.image_id)

    def reap(self, ring: ImageRing | None, *, full: bool = True) -> bool:
        """Check the frames ZeroMQ is done with; True if a queued frame's slot is about to be
        overwritten (or the ring was resized): the caller must drop the queue now.

        `full=False` (for every metadata message) is the cheap check: the release notices
        are read, the segment's size is not looked at. A full check (ten times a second)
        also checks the size. A finished frame's slot is so checked right after ZeroMQ let
        go of it; the oldest queued frame is the nearest to its overwrite.
        """
        in_flight = self._in_flight
        if full and (self._owed or in_flight):
            if ring is None or ring.resized or not ring.check_size():
                return bool(in_flight)
            self._collect()
        if not in_flight:
            return False
        if ring is None or ring.resized:
            return True
        if not full:
            self._collect()
            if not in_flight:
                return False
        n_slots = ring.geometry.n_slots
        # Endangered: oldest + n_slots - last_written_id <= n_slots // 2.
        limit = ring.last_written_id - n_slots + n_slots // 2
        # The oldest unfinished frame (the first sent) is the one nearest to its overwrite.
        return next(iter(in_flight.values())).image_id <= limit

    def dropped(self) -> None:
        """The queue was discarded (socket closed): nothing of it is sent any more (native
        frames stay owed until libzmq has let go of them)."""
        if self._notices is not None:
            self._owed.update(self._in_flight)
        self._in_flight.clear()
        self._trackers.clear()
        self._last_key = None
