"""The live stream's loop: metadata in, rate mode, image out of the ring, message to viewers.

Per image, in order (each step that stops the image counts it once):

    seen -> skipped_by_mode -> unwatched (no viewer) -> no_ring -> skipped_behind
         -> ring_resized (segment resized by another program: never touched)
         -> late (slot no longer holds it) -> bad_images -> dropped_slow_viewer (every send
         buffer still queued) -> torn -> dropped_slow_viewer (EAGAIN) | sent

An image far from being overwritten goes out straight from its slot (slot_sender.py,
counted in `sent_zero_copy` as well as `images_sent`); the others are copied first
(image_copy.py). Either way no torn image reaches a viewer.

The loop never blocks on a viewer (NOBLOCK sends, small high-water mark) and keeps pace
with the metadata stream whatever it costs to send: an image whose id is more than half a
ring behind the newest id in the ring is skipped unread (it is about to be overwritten
anyway; slot = id % n_slots, so this holds whatever the id step). A ring that a std_daq
service made (no stddaq companion) is read as std_daq reads it: its images are sent and
counted as `unverified_images` (gauge `ring_unverified` is 1): nothing can prove they were
not overwritten while read. A stream that cannot send
everything thus sends the newest images it can, and its metadata queue (at most half a ring
of messages) never backs up into the acquisition, whose publisher refuses messages for
everyone when one subscriber's queue is full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from stddaq_common.bus.metadata import ImageMeta
from stddaq_common.bus.metadata_stream import MetadataSubscriber
from stddaq_common.rate_limited_log import RateLimitedLog
from stddaq_common.ring.image_ring import ImageRing, SlotView
from stddaq_common.runtime.stats import Counter, Gauge, Stats
from stddaq_live_stream.image_copy import ImageCopier, NotCopied
from stddaq_live_stream.image_layout import ImageLayout, layout_of
from stddaq_live_stream.output_formats import Array10Format, OutputFormat
from stddaq_live_stream.rate_modes import ForwardMode, RateMode
from stddaq_live_stream.ring_source import RingSource
from stddaq_live_stream.slot_sender import DEFAULT_MAX_IN_FLIGHT, SlotSender
from stddaq_live_stream.viewer_socket import Part, ViewerSocket

log = logging.getLogger(__name__)

RECEIVE_TIMEOUT_MS = 100
"""Longest wait for metadata before the loop looks at stop, viewers and the ring again."""

HOUSEKEEPING_INTERVAL_S = 0.1
"""How often the loop takes in (un)subscriptions while viewers are on, reads every release
notice and checks the ring (and as often when no metadata comes)."""

LAYOUT_CACHE_SIZE = 8



@dataclass(frozen=True, slots=True)
class StreamCounters:
    """The live stream's counters, registered in the service's Stats."""

    seen: Counter
    sent: Counter
    skipped_by_mode: Counter
    unwatched: Counter
    no_ring: Counter
    skipped_behind: Counter
    late: Counter
    torn: Counter
    bad_images: Counter
    dropped_slow_viewer: Counter
    bad_metadata: Counter
    ring_resized: Counter
    unverified: Counter
    sent_zero_copy: Counter
    viewer_resets: Counter
    torn_on_wire: Counter

    @classmethod
    def register(cls, stats: Stats) -> StreamCounters:
        """Register every counter in `stats`."""
        return cls(
            seen=stats.counter("images_seen", "image metadata messages received"),
            sent=stats.counter("images_sent", "images handed to ZeroMQ for the viewers"),
            skipped_by_mode=stats.counter("skipped_by_mode", "images the rate mode did not select"),
            unwatched=stats.counter("skipped_no_viewer", "selected images not sent: no viewer subscribed"),
            no_ring=stats.counter("skipped_no_ring", "selected images not sent: ring not attached yet"),
            skipped_behind=stats.counter(
                "skipped_behind", "selected images skipped unread: far behind the newest in the ring"
            ),
            late=stats.counter("late_images", "selected images whose slot no longer held them"),
            torn=stats.counter("torn_images", "images overwritten while being copied (discarded)"),
            bad_images=stats.counter("bad_images", "images whose metadata or data was not valid"),
            dropped_slow_viewer=stats.counter(
                "dropped_slow_viewer",
                "images not sent: every send buffer queued for viewers, or ZeroMQ refused (EAGAIN)",
            ),
            bad_metadata=stats.counter("bad_metadata", "metadata messages that did not decode"),
            ring_resized=stats.counter(
                "skipped_ring_resized",
                "selected images not sent: another program resized the ring's segment (not touched)",
            ),
            unverified=stats.counter(
                "unverified_images",
                "images read from a ring without stddaq companion (std_daq's): not provably untorn",
            ),
            sent_zero_copy=stats.counter(
                "sent_zero_copy", "images sent straight from their ring slot (no copy; also in images_sent)"
            ),
            viewer_resets=stats.counter(
                "viewer_queue_resets",
                "viewers' queues dropped: a queued image's slot was about to be overwritten",
            ),
            torn_on_wire=stats.counter(
                "torn_on_wire", "zero-copy images whose slot changed while ZeroMQ sent them (must be 0)"
            ),
        )


@dataclass(frozen=True, slots=True)
class StreamGauges:
    """The live stream's gauges."""

    viewers: Gauge
    ring_name_missing: Gauge
    send_buffers: Gauge
    ring_unverified: Gauge
    rings_resized: Gauge

    @classmethod
    def register(cls, stats: Stats, send_hwm: int) -> StreamGauges:
        """Register every gauge in `stats` (and the fixed send_hwm)."""
        stats.gauge("send_hwm", "images queued per viewer before newer ones are dropped", initial=send_hwm)
        return cls(
            viewers=stats.gauge("viewers", "subscriptions of connected viewers", initial=0),
            ring_name_missing=stats.gauge(
                "ring_name_missing", "the ring's /dev/shm name was unlinked by someone else", initial=False
            ),
            send_buffers=stats.gauge("send_buffers", "reusable send buffers allocated", initial=0),
            ring_unverified=stats.gauge(
                "ring_unverified",
                "the ring has no stddaq companion (made by std_daq): images cannot be proven untorn",
                initial=False,
            ),
            rings_resized=stats.gauge(
                "rings_resized", "rings dropped because another program resized their segment", initial=0
            ),
        )


class LiveStream:
    """One live stream: runs in the calling thread until `stop` is set."""

    def __init__(
        self,
        *,
        metadata: MetadataSubscriber,
        ring_source: RingSource,
        viewers: ViewerSocket,
        mode: RateMode,
        output: OutputFormat,
        stats: Stats,
        slot_bytes: int,
        send_buffers: int,
        zero_copy_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metadata = metadata
        self._ring_source = ring_source
        self._viewers = viewers
        self._mode = mode
        self._output = output
        self._stats = stats
        self._clock = clock
        self.counters = StreamCounters.register(stats)
        self.gauges = StreamGauges.register(stats, viewers.send_hwm)
        self._copier = ImageCopier(slot_bytes, send_buffers)
        self._slots = SlotSender(zero_copy_in_flight, native=viewers.native_slots)
        self._every_image = isinstance(mode, ForwardMode)
        self._array10 = output if isinstance(output, Array10Format) and self._slots.native else None
        """The array-1.0 format where slots go to libzmq directly: the fast path."""
        self._layouts: dict[tuple[int, int, int, int, int], ImageLayout] = {}
        self._warnings = RateLimitedLog(log)
        self._next_housekeeping = 0.0
        self._bad_metadata_seen = 0

    @property
    def zero_copy_path(self) -> str:
        """How images go out from their slots: "libzmq" (release notices) or "pyzmq" (trackers)."""
        return "libzmq" if self._slots.native else "pyzmq"

    def run(self, stop: threading.Event) -> None:
        """Stream until `stop` is set."""
        receive = self._metadata.receive
        handle = self.handle
        clock = self._clock
        viewers = self._viewers
        try:
            while not stop.is_set():
                meta = receive(RECEIVE_TIMEOUT_MS)
                now = clock()
                if meta is not None:
                    if not viewers.subscriptions:  # a new viewer is served from its first image;
                        viewers.poll_subscriptions()  # with viewers, housekeeping looks 10x/s
                    handle(meta, now)
                if now >= self._next_housekeeping:
                    self._housekeeping(now)
        finally:
            self.counters.torn_on_wire.value = self._slots.torn_on_wire

    def _housekeeping(self, now: float) -> None:
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL_S
        self._viewers.poll_subscriptions()
        self.gauges.viewers.set(self._viewers.subscriptions)
        source = self._ring_source
        source.check(now)
        if self._slots.in_flight and self._slots.reap(source.current):
            self._drop_queue()
        self.counters.torn_on_wire.value = self._slots.torn_on_wire
        self.gauges.ring_name_missing.set(source.name_missing)
        self.gauges.ring_unverified.set(source.unverified)
        self.gauges.rings_resized.set(source.resized)
        bad = self._metadata.bad_messages
        if bad != self._bad_metadata_seen:
            self.counters.bad_metadata.inc(bad - self._bad_metadata_seen)
            self._bad_metadata_seen = bad
        self.gauges.send_buffers.set(self._copier.pool.size)
        self._stats.maybe_emit(now)

    def _drop_queue(self) -> None:
        """Drop the viewers' queue: an image queued from its slot is about to be overwritten."""
        log.warning("dropping the viewers' queue: an image queued from its slot was about to be "
                    "overwritten (viewers too slow for the acquisition; they reconnect)")
        self._viewers.reset()
        self._slots.dropped()
        self.counters.viewer_resets.value += 1

    def _layout(self, meta: ImageMeta, nbytes: int) -> ImageLayout:
        """layout_of(meta, nbytes), from a small cache (an acquisition has one layout)."""
        key = (meta.height, meta.width, meta.dtype, meta.compression, nbytes)
        layout = self._layouts.get(key)
        if layout is None:
            layout = layout_of(meta, nbytes)  # BadImage: never cached
            if len(self._layouts) >= LAYOUT_CACHE_SIZE:
                self._layouts.clear()
            self._layouts[key] = layout
        return layout

    def handle(self, meta: ImageMeta, now: float) -> None:
        """Send one image to the viewers if the mode selects it and it can be read whole."""
        counters = self.counters
        counters.seen.value += 1
        slots = self._slots
        if slots.reap(self._ring_source.current, full=False):  # every message: the writer
            self._drop_queue()  # moves on whatever is sent
        image_id = meta.image_id
        if not self._every_image and not self._mode.selects(image_id, now):
            counters.skipped_by_mode.value += 1
            return
        if not self._viewers.subscriptions:
            counters.unwatched.value += 1
            return
        ring = self._ring_source.get(now)
        if ring is None:
            counters.no_ring.value += 1
            return
        if ring.last_written_id - image_id > ring.geometry.n_slots // 2:
            counters.skipped_behind.value += 1
            return
        view = ring.view(image_id, meta.size or None)
        if view is None:
            if ring.resized:
                counters.ring_resized.value += 1
            else:
                counters.late.value += 1
            return
        if not ring.verified:
            counters.unverified.value += 1
        array10 = self._array10
        try:
            layout = self._layout(meta, view.nbytes)
            header = array10.header(meta, layout) if array10 is not None else b""
        except ValueError as error:  # BadImage: what the metadata got wrong
            counters.bad_images.value += 1
            self._warnings.warning("bad images", "image %d not streamed: %s", image_id, error)
            return
        if array10 is not None and not layout.compressed and slots.can_send(view, ring) and slots.take(view):
            # The common case, in three C calls: the header (copied), the slot (tracked).
            try:
                sent = self._viewers.send_from_slot(header, view.address, view.nbytes)
            except zmq.ZMQError:
                slots.failed()
                raise
            if sent:
                counters.sent.value += 1
                counters.sent_zero_copy.value += 1
            else:
                counters.dropped_slow_viewer.value += 1
                slots.unsent()
            return
        self._send_other(meta, view, ring, layout)

    def _send_other(self, meta: ImageMeta, view: SlotView, ring: ImageRing, layout: ImageLayout) -> None:
        """Send an image the fast path does not take: copied, decompressed, or a zero-copy
        frame in another format (or through pyzmq)."""
        counters = self.counters
        zero_copy = False
        image: Part | NotCopied
        try:
            if layout.compressed and not self._output.sends_compressed:
                image = self._copier.decompress_out(view, layout.dtype, layout.raw_nbytes)
            elif (
                self._array10 is None
                and self._slots.can_send(view, ring)
                and (frame := self._slots.frame(view)) is not None
            ):
                image = frame
                zero_copy = True
            else:
                image = self._copier.copy_out(view)
            if image is NotCopied.TORN:
                counters.torn.value += 1
                return
            if image is NotCopied.NO_BUFFER:
                counters.dropped_slow_viewer.value += 1
                return
            parts = self._output.parts(meta, layout, image)
        except ValueError as error:  # BadImage, WireFormatError: what the metadata or data got wrong
            if zero_copy:
                self._slots.unsent()
            counters.bad_images.value += 1
            self._warnings.warning("bad images", "image %d not streamed: %s", meta.image_id, error)
            return
        if self._viewers.send(parts):
            counters.sent.value += 1
            if zero_copy:
                counters.sent_zero_copy.value += 1
        else:
            counters.dropped_slow_viewer.value += 1
            if zero_copy:
                self._slots.unsent()

    def close(self) -> None:
        """Close the viewers' socket, the metadata subscription and the ring."""
        self._viewers.close()
        self._metadata.close()
        self._ring_source.close()
