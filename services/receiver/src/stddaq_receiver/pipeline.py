"""The receiver's per-frame logic: decode, sequence, write the slot, publish in order.

No sockets here: `handle(parts, now)` takes the parts of one received message and
`publish(meta) -> bool` is whatever sends metadata (a MetadataPublisher in the service, a
list in tests). Every bad input is counted under a reason and logged (rate-limited); no
input can raise out of `handle`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass

from stddaq_common.metadata import Compression, Dtype, ImageMeta, Status, dtype_of
from stddaq_common.stats import Counter, Gauge, Stats
from stddaq_common.wire_errors import KINDS, WireFormatError
from stddaq_receiver.grayscale import FrameRejected
from stddaq_receiver.inputs import FrameDecoder
from stddaq_receiver.reorder import Arrival, ReorderWindow
from stddaq_receiver.slot_writer import SlotWriter

log = logging.getLogger("stddaq.receiver")

REJECT_REASONS = (*KINDS, "shape", "dtype", "internal")
"""Counter suffixes of rejected frames: the wire-format kinds plus the conversion reasons."""

_LOG_INTERVAL_S = 5.0

Publish = Callable[[ImageMeta], bool]


class _RateLimitedLog:
    """Logs one warning per key at most every interval, saying how many were not logged."""

    def __init__(self, interval_s: float = _LOG_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        skipped = self._suppressed.pop(key, 0)
        suffix = f" ({skipped} more like this since the last report)" if skipped else ""
        log.warning(message + suffix, *args)
        self._next[key] = now + self._interval_s


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
    ) -> None:
        self._decoder = decoder
        self._writer = writer
        self._window = window
        self._publish = publish
        self._counters = counters
        self._height = writer.height
        self._width = writer.width
        self._dtype_code: Dtype = dtype_of(writer.dtype)
        self._log = _RateLimitedLog()

    def handle(self, parts: Sequence[Sized], now: float) -> None:
        """Process one received message (never raises for bad input)."""
        counters = self._counters
        counters.frames_received.value += 1
        counters.bytes_received.value += sum(len(part) for part in parts)
        try:
            frame = self._decoder.decode(parts)
        except WireFormatError as error:
            self._reject(error.kind, error.reason, None)
            return
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
        try:
            nbytes = self._writer.write(frame)
        except FrameRejected as rejection:
            self._window.abandon(image_id)
            self._reject(rejection.reason, rejection.message, image_id)
            return
        except WireFormatError as error:
            self._window.abandon(image_id)
            self._reject(error.kind, error.reason, image_id)
            return
        except Exception as error:  # a bug must not stop acquisition: count, log, go on
            self._window.abandon(image_id)
            log.exception("frame %d could not be written", image_id)
            self._reject("internal", f"{type(error).__name__}: {error}", image_id)
            return
        counters.image_bytes_written.value += nbytes
        meta = ImageMeta(
            image_id, self._height, self._width, nbytes, self._dtype_code,
            Status.GOOD_IMAGE, Compression.NONE, frame.detail,
        )
        self._window.complete(image_id, meta)
        self._publish_released(now)

    def tick(self, now: float, idle: bool) -> None:
        """Publish what timed out in the window and bring the counters up to date.

        `idle`: every input queue is drained (the reorder timeout applies).
        """
        for meta in self._window.release(now, idle):
            self._send(meta)
        self._sync_counters()

    def close(self) -> None:
        """End of the stream: publish every image already written, count the gaps."""
        for meta in self._window.close():
            self._send(meta)
        self._sync_counters()

    def _publish_released(self, now: float) -> None:
        for meta in self._window.release(now):
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
