"""The receiver's per-frame logic: decode, sequence, write the slot, publish in order.

No sockets here: `handle(parts, now)` takes the parts of one received message and
`publish(meta) -> bool` is whatever sends metadata (a MetadataPublisher in the service, a
list in tests). Every bad input is counted under a reason and logged (rate-limited); no
input can raise out of `handle`.

With a DecodePool, decompressions run in decoder threads: `handle` submits them and
returns, and `collect(now)` (called by the receive loop, and by `tick` and `close`)
takes their outcomes and publishes. Without one, every frame is written inside `handle`.

With several connections (`sources`), a frame a whole reorder window ahead of open ids is
parked (module `parking`) and its connection listed in `parked_sources`, which the
receive loop stops reading; `resume(now, idle)` lets parked frames in when their turn
comes.

A reader that can put a part where it is told (the ZMTP reader) asks `place(source,
heads, nbytes, now)` once the parts before the value (`value_index`) are in: for an
uncompressed frame of the config's type and shape whose turn it is, the frame is
sequenced then and its slot marked "being written"; the answer is the slot, and the value
is received straight into it (no second copy). `message(source, parts, now)` then checks
the whole message and completes the slot (`abort` if the connection broke first). Any other
frame (None from `place`) goes through `handle` once it is whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass

from stddaq_common.bus.metadata import Compression, Dtype, ImageMeta, Status, dtype_of
from stddaq_common.rate_limited_log import RateLimitedLog
from stddaq_common.ring.image_ring import RingResized, SlotBusy, SlotWrite
from stddaq_common.runtime.stats import Counter, Gauge, Stats
from stddaq_common.wire.byte_views import BufferLike
from stddaq_common.wire.errors import KINDS, PARTS, WireFormatError
from stddaq_receiver.decode_pool import DecodePool
from stddaq_receiver.grayscale import FrameRejected
from stddaq_receiver.inputs import FrameDecoder, IncomingFrame
from stddaq_receiver.parking import Parked, ParkingLot
from stddaq_receiver.reorder import Arrival, ReorderWindow
from stddaq_receiver.slot_writer import SlotJob, SlotWriter

log = logging.getLogger("stddaq.receiver")

REJECT_REASONS = (*KINDS, "shape", "dtype", "ring", "internal")
"""Counter suffixes of rejected frames: the wire-format kinds plus the conversion reasons."""

_LOG_INTERVAL_S = 5.0
_OUTCOME_WAIT_S = 0.05
"""Longest single wait for a decoder thread's outcome (the wait repeats while needed)."""
_CLOSE_WAIT_S = 10.0
"""At close, longest wait for the decoder threads' last outcomes."""

Publish = Callable[[ImageMeta], bool]
PublishAll = Callable[[Sequence[ImageMeta]], bool]
"""Sends several in order and says True, or sends none and says False (then each goes
through Publish)."""

_ACCEPTED = Arrival.ACCEPTED
_RESTARTED = Arrival.RESTARTED
_GOOD_IMAGE = Status.GOOD_IMAGE
_NO_COMPRESSION = Compression.NONE


Reservation = tuple[IncomingFrame, SlotWrite | None, int]
"""A frame sequenced when its headers arrived, its value going straight into its slot: the
frame, the slot being written (None when the frame was dropped or rejected on arrival: its
value is read and thrown away) and the value's size."""


@dataclass(slots=True)
class ReceiverCounters:
    """The receiver's counters and gauges, registered in its Stats."""

    frames_received: Counter
    frames_published: Counter
    bytes_received: Counter
    image_bytes_written: Counter
    missing_ids: Counter
    gaps: Counter
    duplicates: Counter
    late_frames: Counter
    restarts: Counter
    orphaned_frames: Counter
    publish_dropped: Counter
    protocol_errors: Counter
    reconnects: Counter
    rejected: dict[str, Counter]
    reorder_waiting: Gauge
    last_published_id: Gauge

    @classmethod
    def register(cls, stats: Stats) -> ReceiverCounters:
        """Register every counter and gauge of the receiver in `stats`."""
        c = stats.counter
        return cls(
            frames_received=c("frames_received", "messages received from the camera"),
            frames_published=c("frames_published", "images written and their metadata published"),
            bytes_received=c("bytes_received", "bytes of the messages received"),
            image_bytes_written=c("image_bytes_written", "bytes of images written to the ring"),
            missing_ids=c("missing_ids", "image ids given up because they never arrived"),
            gaps=c("gaps", "runs of consecutive missing image ids"),
            duplicates=c("duplicates", "frames dropped: id already received or published"),
            late_frames=c("late_frames", "frames dropped: id already given up as missing"),
            restarts=c("restarts", "sequences restarted because the id jumped back"),
            orphaned_frames=c("orphaned_frames", "frames dropped: window moved past them mid-write"),
            publish_dropped=c("publish_dropped", "metadata not sent: a subscriber queue was full"),
            protocol_errors=c("protocol_errors", "camera connections dropped: the peer broke ZMTP"),
            reconnects=c("reconnects", "camera connections lost and made again (zmtp reader)"),
            rejected={
                reason: c(f"rejected_{reason}", f"frames rejected: {reason}")
                for reason in REJECT_REASONS
            },
            reorder_waiting=stats.gauge("reorder_waiting", "frames waiting for earlier ids", initial=0),
            last_published_id=stats.gauge("last_published_id", "id of the last image published", initial=0),
        )


class ReceiverPipeline:
    """Camera messages in, images in the ring and metadata out in strictly increasing id order."""

    def __init__(
        self,
        decoder: FrameDecoder,
        writer: SlotWriter,
        window: ReorderWindow[ImageMeta],
        publish: Publish,
        counters: ReceiverCounters,
        pool: DecodePool | None = None,
        sources: int = 1,
        publish_all: PublishAll | None = None,
    ) -> None:
        self._decoder = decoder
        self._parking = ParkingLot(sources)
        self._writer = writer
        self._ring = writer.ring
        self._window = window
        self._publish = publish
        self._publish_all = publish_all
        self.defer_publishing = False
        """True: a whole message's metadata (ids now in order) waits for `publish_due`, so a
        round's images go out together (the receive loop sets it and calls that per round)."""
        self._due = False
        self._counters = counters
        self._pool = pool
        self.pool = pool
        """The decoder threads (None: frames are decompressed in the receive thread)."""
        self._height = writer.height
        self._width = writer.width
        self._dtype_code: Dtype = dtype_of(writer.dtype)
        self._log = RateLimitedLog(log, _LOG_INTERVAL_S)
        self._reserved: dict[int, Reservation] = {}
        """Per connection: the frame whose value is arriving straight into its slot."""
        self.value_index = decoder.value_index
        """Index of the part `place` is asked about (-1: never)."""
        self.received = counters.frames_received
        """The frames_received counter (the receive loop reads its value around a round)."""
        self._several = sources > 1
        self._direct: tuple[object, object, int] = (None, None, -1)
        """The dtype and shape objects (as the decoder hands them out for one data header) of
        the last uncompressed layout that is a plain copy into the slot, and its size: a frame
        with the very same objects needs no new plan."""

    @property
    def messages_received(self) -> int:
        """Messages received from the camera so far (the frames_received counter)."""
        return self._counters.frames_received.value

    @property
    def in_flight(self) -> int:
        """Frames in the decoder threads whose outcome has not been collected."""
        pool = self._pool
        return 0 if pool is None else pool.in_flight

    @property
    def parked(self) -> dict[int, Parked]:
        """The parked frames by connection: the very dict of the parking lot, so a caller may
        keep it and test it (empty: no connection is held back)."""
        return self._parking.parked

    @property
    def parked_sources(self) -> frozenset[int]:
        """Connections whose next frame waits for the reorder window: do not read them."""
        return self._parking.parked_sources

    def _count_received(self, parts: Sequence[Sized]) -> None:
        """Count one received message and its bytes."""
        counters = self._counters
        counters.frames_received.value += 1
        nbytes = 0
        for part in parts:
            nbytes += len(part)
        counters.bytes_received.value += nbytes

    def handle(self, parts: Sequence[Sized], now: float, source: int = 0) -> None:
        """Process one message received on connection `source` (never raises for bad input)."""
        self._count_received(parts)
        try:
            frame = self._decoder.decode(parts)
        except WireFormatError as error:
            self._reject(error.kind, error.reason, None)
            return
        parking = self._parking
        window = self._window
        if parking.sources > 1 and window.beyond(frame.image_id):
            if parking.may_park():  # another connection may still bring the ids below it
                parking.park(source, frame, now)
                return
            parking.park(source, frame, now)
            self._let_in_all(now)  # every connection is ahead: the ids below are missing
            return
        if len(parking) and window.restarts_at(frame.image_id):
            self._let_in_all(now)  # the parked frames were sent before the restart
        self._accept(frame, now)

    def place(self, source: int, heads: Sequence[BufferLike], nbytes: int, now: float) -> memoryview | None:
        """Where the value part (`nbytes` long) of the message arriving on `source` goes: its
        ring slot (the frame is sequenced now), or None (receive it anywhere and pass the
        whole message to `message`). Never raises for bad input."""
        try:
            frame = self._decoder.decode_head(heads)
        except WireFormatError:
            return None  # `handle` rejects it with its reason once the message is whole
        if frame.channel is not None:
            return None
        dtype, shape, direct_nbytes = self._direct
        if frame.dtype is not dtype or frame.shape is not shape:
            direct_nbytes = self._learn_direct(frame)
        if nbytes != direct_nbytes:
            return None
        window = self._window
        image_id = frame.image_id
        if self._several and window.beyond(image_id):
            return None  # to be parked: `handle` does it with the whole message
        if self._parking.parked and window.restarts_at(image_id):
            self._let_in_all(now)
        verdict = window.arrive(image_id, now)
        if verdict is not _ACCEPTED:
            if verdict is not _RESTARTED:
                self._log.warning(
                    verdict.value, "dropped %s frame %d (next expected id %s)",
                    verdict.value, image_id, window.next_id,
                )
                self._reserved[source] = (frame, None, nbytes)
                return None
            log.warning("image id jumped back to %d: camera restart, starting a new sequence", image_id)
        if window.has_released:
            self._publish_released(now)
        token: SlotWrite | None
        try:
            token = self._ring.start_write(image_id)
        except SlotBusy:
            token = self._start_write_when_free(image_id, now)
        except Exception as error:
            self._fail(image_id, error)
            token = None
        self._reserved[source] = (frame, token, nbytes)
        return None if token is None else token.data[:nbytes]

    def _learn_direct(self, frame: IncomingFrame) -> int:
        """The value size of `frame`'s layout if it is copied into the slot as it is (kept
        for the next frames with the same dtype and shape objects), else -1."""
        try:
            plan = self._writer.plan(frame)
        except FrameRejected:
            return -1
        if not plan.is_copy:
            return -1
        self._direct = (frame.dtype, frame.shape, plan.in_nbytes)
        return plan.in_nbytes

    def _start_write_when_free(self, image_id: int, now: float) -> SlotWrite | None:
        """start_write of a slot that was busy: wait once for the decoder threads; None
        (the frame failed and is counted) if it cannot be had."""
        try:
            return self._start_write(image_id, now)
        except Exception as error:
            self._fail(image_id, error)
            return None

    def message(self, source: int, parts: Sequence[Sized], now: float) -> None:
        """A whole message from `source` (its value where `place` said). Never raises for bad input."""
        reservation = self._reserved.pop(source, None)
        if reservation is None:
            self.handle(parts, now, source)
            return
        counters = self._counters
        counters.frames_received.value += 1
        counters.bytes_received.value += sum(map(len, parts))
        frame, token, nbytes = reservation
        if token is None:
            return  # dropped or rejected when it arrived, and counted then
        try:
            self._decoder.check_rest(frame, parts)
            self._ring.finish_write(token, nbytes)
        except Exception as error:
            self._ring.abandon_write(token)
            self._fail(frame.image_id, error)
            return
        counters.image_bytes_written.value += nbytes
        image_id = frame.image_id
        window = self._window
        window.complete(image_id, ImageMeta(
            image_id, self._height, self._width, nbytes, self._dtype_code,
            _GOOD_IMAGE, _NO_COMPRESSION, frame.detail,
        ))
        if self.defer_publishing:
            self._due = True  # publish_due releases what is in order (maybe nothing yet)
        elif window.next_id == image_id:  # else an earlier id is still open: nothing to publish yet
            self._publish_released(now)

    def publish_due(self, now: float) -> None:
        """Publish what the messages of this round released (defer_publishing)."""
        if self._due:
            self._due = False
            self._publish_released(now)

    def abort(self, source: int, reason: str) -> None:
        """The message arriving on `source` will never be whole (the connection broke):
        a frame already sequenced is rejected (counted under `parts`) and its slot abandoned."""
        reservation = self._reserved.pop(source, None)
        if reservation is None:
            return
        frame, token, _ = reservation
        if token is None:
            return
        self._ring.abandon_write(token)
        self._fail(frame.image_id, WireFormatError(reason, PARTS))

    def _start_write(self, image_id: int, now: float) -> SlotWrite:
        """Mark the image's slot "being written"; a slot still busy in a decoder thread is waited for once."""
        ring = self._writer.ring
        try:
            return ring.start_write(image_id)
        except SlotBusy:
            pool = self._pool
            while pool is not None and pool.in_flight:
                self._take_outcomes(now, _OUTCOME_WAIT_S)
            return ring.start_write(image_id)

    def resume(self, now: float, idle: bool) -> None:
        """Let in the parked frames whose turn has come, lowest id first; one that waited
        the reorder timeout while the other connections were idle (`idle`), or the hard
        timeout, is let in anyway (the ids below it are then given up)."""
        parking = self._parking
        window = self._window
        while (parked := parking.lowest()) is not None:
            waited = now - parked.since
            if window.beyond(parked.frame.image_id) and not (
                waited >= window.hard_timeout or (idle and waited >= window.timeout)
            ):
                return
            self._accept(parking.take(parked), now)

    def _let_in_all(self, now: float) -> None:
        for frame in self._parking.take_all():
            self._accept(frame, now)

    def _accept(self, frame: IncomingFrame, now: float) -> None:
        """Sequence a decoded frame, write its slot (or hand it to a decoder thread), publish."""
        image_id = frame.image_id
        verdict = self._window.arrive(image_id, now)
        if not verdict.accepted:
            self._log.warning(
                verdict.value, "dropped %s frame %d (next expected id %s)",
                verdict.value, image_id, self._window.next_id,
            )
            return
        if verdict is Arrival.RESTARTED:
            log.warning("image id jumped back to %d: camera restart, starting a new sequence", image_id)
        if self._window.has_released:  # publish before this write can reuse one of their slots
            self._publish_released(now)
        pool = self._pool
        while pool is not None and pool.full:
            self._take_outcomes(now, _OUTCOME_WAIT_S)
        try:
            job = self._start(frame, now)
        except Exception as error:
            self._fail(image_id, error)
            return
        if pool is not None and job.parallel:
            pool.submit(job)
            return
        try:
            written = job.run()
        except Exception as error:
            self._fail(image_id, error)
            return
        self._complete(frame, written, now)

    def collect(self, now: float) -> None:
        """Take the decoder threads' finished frames and publish what is now in order."""
        if self._pool is not None and self._pool.in_flight:
            self._take_outcomes(now, 0.0)

    def tick(self, now: float, idle: bool) -> None:
        """Publish what timed out in the window and bring the counters up to date.

        `idle`: every input queue is drained (the reorder timeout applies).
        """
        self.collect(now)
        self.resume(now, idle)
        for meta in self._window.release(now, idle):
            self._send(meta)
        self._sync_counters()

    def close(self) -> None:
        """End of the stream: let in the parked frames, finish the decoder threads' frames,
        publish every image already written, count the gaps."""
        for source in list(self._reserved):
            self.abort(source, "the receiver stopped before the message was whole")
        self._let_in_all(time.monotonic())
        pool = self._pool
        if pool is not None:
            deadline = time.monotonic() + _CLOSE_WAIT_S
            while pool.in_flight and time.monotonic() < deadline:
                self._take_outcomes(time.monotonic(), _OUTCOME_WAIT_S)
            pool.close()
        for meta in self._window.close():
            self._send(meta)
        self._sync_counters()

    def _start(self, frame: IncomingFrame, now: float) -> SlotJob:
        """The frame's slot job; a slot still busy in a decoder thread is waited for once."""
        try:
            return self._writer.start(frame)
        except SlotBusy:
            pool = self._pool
            while pool is not None and pool.in_flight:
                self._take_outcomes(now, _OUTCOME_WAIT_S)
            return self._writer.start(frame)

    def _take_outcomes(self, now: float, timeout: float) -> None:
        assert self._pool is not None
        for outcome in self._pool.collect(timeout):
            if outcome.error is None:
                self._complete(outcome.job.frame, outcome.nbytes, now)
            else:
                self._fail(outcome.job.image_id, outcome.error)

    def _complete(self, frame: IncomingFrame, nbytes: int, now: float) -> None:
        """The frame's slot is written: its metadata goes out when its turn comes."""
        self._counters.image_bytes_written.value += nbytes
        meta = ImageMeta(
            frame.image_id, self._height, self._width, nbytes, self._dtype_code,
            _GOOD_IMAGE, _NO_COMPRESSION, frame.detail,
        )
        self._window.complete(frame.image_id, meta)
        self._publish_released(now)

    def _fail(self, image_id: int, error: BaseException) -> None:
        """The accepted frame could not be written: skip its id, count the reason (and
        publish what that lets through)."""
        self._window.abandon(image_id)
        if self._window.next_id == image_id:
            self._publish_released(time.monotonic())
        if isinstance(error, FrameRejected):
            self._reject(error.reason, error.message, image_id)
        elif isinstance(error, WireFormatError):
            self._reject(error.kind, error.reason, image_id)
        elif isinstance(error, RingResized):  # another program resized the ring: never touched
            self._reject("ring", str(error), image_id)
        else:  # a bug must not stop acquisition: count, log, go on
            log.error("frame %d could not be written", image_id, exc_info=error)
            self._reject("internal", f"{type(error).__name__}: {error}", image_id)

    def _publish_released(self, now: float) -> None:
        released = self._window.release(now)
        if not released:
            return
        publish_all = self._publish_all
        if len(released) > 1 and publish_all is not None and publish_all(released):
            counters = self._counters
            counters.frames_published.value += len(released)
            counters.last_published_id.value = released[-1].image_id
            return
        for meta in released:
            self._send(meta)

    def _send(self, meta: ImageMeta) -> None:
        counters = self._counters
        if self._publish(meta):
            counters.frames_published.value += 1
            counters.last_published_id.value = meta.image_id
        else:
            counters.publish_dropped.value += 1
            self._log.warning(
                "publish", "metadata of image %d not sent: a subscriber's queue is full",
                meta.image_id,
            )

    def _reject(self, reason: str, message: str, image_id: int | None) -> None:
        counter = self._counters.rejected.get(reason) or self._counters.rejected["internal"]
        counter.value += 1
        which = "a message" if image_id is None else f"frame {image_id}"
        self._log.warning("reject:" + reason, "rejected %s (%s): %s", which, reason, message)

    def _sync_counters(self) -> None:
        window = self._window.counters
        counters = self._counters
        counters.missing_ids.value = window.missing
        counters.gaps.value = window.gaps
        counters.duplicates.value = window.duplicates
        counters.late_frames.value = window.late
        counters.restarts.value = window.restarts
        counters.orphaned_frames.value = window.orphaned
        counters.reorder_waiting.value = self._window.waiting
