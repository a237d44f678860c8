"""The receiver service: wiring of sockets, pipeline, ring and metadata publisher.

    stddaq-receiver CONFIG STREAM_ADDRESS [-n CONNECTIONS] [-t pull|sub] [-f bsread|array-1.0]
                    [--input-reader zmtp|zmq]

Input readers: `zmtp` (default for tcp:// PULL inputs) speaks ZeroMQ's wire protocol
itself and receives each uncompressed image straight into its ring slot (one copy from the
kernel); `zmq` (the default for ipc:// and SUB inputs, and the reference) uses libzmq: its
I/O thread receives each message, then one memcpy puts the image into its slot.

Threading: one receive thread polls the N connections, decodes the headers, writes
uncompressed frames into their slots and publishes in id order. Compressed frames
(bitshuffle/LZ4: ~1.4 ms of C per 2 MiB frame, with
the GIL released) are decompressed straight into their slots by `--decode-threads`
decoder threads (default 2), each writing its own slot (ring.start_write tokens); 0
decompresses in the receive thread.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from stddaq_common.bus.metadata import ImageMeta
from stddaq_common.bus.metadata_stream import MetadataPublisher
from stddaq_common.config.model import DaqConfig
from stddaq_common.ring.geometry import image_dtype
from stddaq_common.ring.image_ring import ImageRing
from stddaq_common.runtime.arg_types import int_in_range, positive_float
from stddaq_common.runtime.runner import StartupError
from stddaq_common.runtime.stats import Stats
from stddaq_receiver.decode_pool import DecodePool
from stddaq_receiver.input_sockets import DEFAULT_RCVHWM, SOCKET_TYPES, InputSockets
from stddaq_receiver.inputs import INPUT_FORMATS, frame_decoder
from stddaq_receiver.malloc_tuning import keep_message_buffers
from stddaq_receiver.pipeline import ReceiverCounters, ReceiverPipeline
from stddaq_receiver.reorder import ReorderWindow
from stddaq_receiver.slot_writer import SlotWriter
from stddaq_receiver.zmtp_inputs import ZmtpInputError, ZmtpInputs

log = logging.getLogger("stddaq.receiver")

SERVICE_NAME = "receiver"
CAMERA_TYPES = ("pco", "bsread")
"""detector_type values the receiver serves (cameras sending whole frames)."""
DEFAULT_CONNECTIONS = 4
DEFAULT_REORDER_WINDOW = 500
DEFAULT_REORDER_TIMEOUT_S = 1.0
DEFAULT_DECODE_THREADS = 2
IN_FLIGHT_POLL_MS = 1
"""Poll timeout while decoder threads hold frames (their outcomes are collected after it)."""
POLL_TIMEOUT_MS = 20
"""Longest the loop sleeps without looking at the reorder window and the stats."""
PUBLISH_GRACE_S = 0.2
"""At exit, time given to the last metadata messages to reach the subscribers."""
INPUT_READERS = ("zmtp", "zmq")
MIN_PART_LIMIT = 64 * 1024 * 1024
"""The zmtp reader refuses message parts above max(4 slots, this)."""
TICK_S = 0.05
"""How often the reorder timeouts, the counters and the stats are looked at."""


_positive_int = int_in_range(1)
_non_negative_int = int_in_range(0)
_positive_float = positive_float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The receiver's own command-line arguments (after CONFIG)."""
    parser.add_argument("stream_address", metavar="STREAM_ADDRESS",
                        help="camera stream to connect to, e.g. tcp://pco-server:9999")
    parser.add_argument("-n", "--connections", "--number_of_connections", type=_positive_int, default=None,
                        help=f"parallel connections to the camera (default {DEFAULT_CONNECTIONS} "
                        "for pull, 1 for sub)")
    parser.add_argument("-t", "--type", dest="socket_type", choices=SOCKET_TYPES, default="pull",
                        help="socket type: pull (the camera binds PUSH, default) or sub (PUB)")
    parser.add_argument("-f", "--format", dest="input_format", choices=INPUT_FORMATS,
                        default="bsread", help="message format (default bsread)")
    parser.add_argument("--reorder-window", type=_positive_int, default=DEFAULT_REORDER_WINDOW,
                        metavar="IDS", help="most image ids the reordering spans "
                        f"(default {DEFAULT_REORDER_WINDOW}; at most half the ring's slots)")
    parser.add_argument("--reorder-timeout", type=_positive_float, default=DEFAULT_REORDER_TIMEOUT_S,
                        metavar="SECONDS", help="how long a frame waits for missing earlier ids "
                        f"before they are counted missing (default {DEFAULT_REORDER_TIMEOUT_S})")
    parser.add_argument("--rcvhwm", type=_positive_int, default=DEFAULT_RCVHWM, metavar="MESSAGES",
                        help=f"receive queue per connection (default {DEFAULT_RCVHWM})")
    parser.add_argument("--input-reader", choices=INPUT_READERS, default=None,
                        help="zmtp: the receiver's own ZeroMQ wire-protocol reader, images straight "
                        "into their slots (default for tcp:// with -t pull); zmq: libzmq (default "
                        "otherwise; -t sub always uses it)")
    parser.add_argument("--decode-threads", type=_non_negative_int, default=DEFAULT_DECODE_THREADS,
                        metavar="N", help="threads decompressing compressed frames into the ring "
                        f"(default {DEFAULT_DECODE_THREADS}; 0: the receive thread does it)")


class Inputs(Protocol):
    """What the receive loop needs from its input connections (InputSockets or ZmtpInputs)."""

    def ready(self, timeout_ms: int) -> Sequence[Any]:
        """Connections with something to receive, waiting up to `timeout_ms`."""

    def receive(self, ready: Any, now: float, sink: ReceiverPipeline) -> None:
        """Hand what the ready connections have to the pipeline."""

    def pause(self, indices: frozenset[int]) -> None:
        """Do not read the connections in `indices`."""

    def gather(self) -> bool:
        """Pause briefly so that the next messages come together; False (at once) if
        nothing may wait now or something is readable."""

    def close(self) -> None:
        """Close every connection."""


class ReceiverService:
    """Runs the receive loop until stopped; owns the sockets, the ring and the publisher."""

    def __init__(
        self,
        sockets: Inputs,
        pipeline: ReceiverPipeline,
        ring: ImageRing,
        publisher: MetadataPublisher,
        stats: Stats,
    ) -> None:
        self._sockets = sockets
        self._pipeline = pipeline
        self._ring = ring
        self._publisher = publisher
        self._stats = stats

    def run(self, stop: threading.Event) -> None:
        """Receive, write and publish until `stop` is set."""
        sockets = self._sockets
        pipeline = self._pipeline
        stats = self._stats
        clock = time.monotonic
        last_tick = clock()
        timeout_ms = 0
        probe = False
        parking = pipeline.parked
        no_sources: frozenset[int] = frozenset()
        paused = no_sources
        frames_received = pipeline.received
        pool = pipeline.pool
        pipeline.defer_publishing = True
        while not stop.is_set():
            ready = sockets.ready(timeout_ms)
            now = clock()
            received = 0
            if ready:
                before = frames_received.value
                sockets.receive(ready, now, pipeline)
                received = frames_received.value - before
                pipeline.publish_due(now)  # the round's images go out together
            in_flight = 0 if pool is None else pool.in_flight
            if in_flight:
                pipeline.collect(now)
                in_flight = pool.in_flight if pool is not None else 0
            parked = no_sources
            if parking:
                pipeline.resume(now, idle=not ready)
                parked = pipeline.parked_sources
            if parked is not paused:
                sockets.pause(parked)
                paused = parked
            if now - last_tick >= TICK_S:
                if ready and not probe:
                    probe = True  # first look once without waiting: are all queues drained?
                else:
                    pipeline.tick(now, idle=not ready)  # idle: every queue drained, timeouts apply
                    self._ring.check_size()  # a resize by another program is logged once, at once
                    stats.maybe_emit(now)
                    last_tick = now
                    probe = False
                    in_flight = 0 if pool is None else pool.in_flight
            # The poll is level-triggered: it returns at once while anything is left to read,
            # so after a round that received it may wait. A look without waiting (0) only
            # where "nothing was ready" must be known: the tick's probe, parked connections
            # (resume), frames in the decoder threads (their outcomes are published after it).
            if ready and (probe or parked or in_flight):
                timeout_ms = 0
            else:
                timeout_ms = IN_FLIGHT_POLL_MS if in_flight else POLL_TIMEOUT_MS
            # Gathering: after a round that took messages, with nothing parked or in the
            # decoder threads, the inputs pause (at most GATHER_MAX_S, 50 ms, ended early by what arrives,
            # skipped while anything is readable; zmtp_inputs), so the next messages are read
            # and published together: one wake-up per pause, whatever the rate.
            if received and not (parked or in_flight):
                sockets.gather()

    def close(self) -> None:
        """Publish what is already written, then close sockets, publisher and ring."""
        try:
            self._sockets.close()
            self._pipeline.close()
            time.sleep(PUBLISH_GRACE_S)  # the publisher closes with LINGER 0
        finally:
            self._publisher.close()
            self._ring.close()


def _connections(args: argparse.Namespace) -> int:
    if args.socket_type == "sub":
        if args.connections not in (None, 1):
            raise StartupError(
                f"--type sub with {args.connections} connections would receive every frame "
                f"{args.connections} times (PUB sends each message to every subscriber); use -n 1"
            )
        return 1
    return int(args.connections or DEFAULT_CONNECTIONS)


def input_reader(args: argparse.Namespace) -> str:
    """The reader for these arguments: --input-reader, else zmtp for tcp:// PULL inputs."""
    if args.socket_type == "sub":
        if args.input_reader == "zmtp":
            raise StartupError("--input-reader zmtp reads PULL connections only; -t sub uses zmq")
        return "zmq"
    if args.input_reader is not None:
        return str(args.input_reader)
    return "zmtp" if args.stream_address.startswith("tcp://") else "zmq"


def build(config: DaqConfig, args: argparse.Namespace, stats: Stats) -> ReceiverService:
    """Create the ring, the publisher and the sockets for `config` (run_service's build)."""
    if config.detector_type not in CAMERA_TYPES:
        raise StartupError(
            f"the receiver serves camera streams (detector_type {' or '.join(CAMERA_TYPES)}), "
            f"not detector_type {config.detector_type!r}"
        )
    connections = _connections(args)
    reader = input_reader(args)
    height, width = config.image_pixel_height, config.image_pixel_width
    dtype = image_dtype(config)
    counters = ReceiverCounters.register(stats)
    keep_message_buffers(height * width * dtype.itemsize)
    ring = ImageRing.for_config(config, create=True)
    try:
        window_size = min(args.reorder_window, ring.geometry.n_slots // 2)
        if window_size < args.reorder_window:
            log.warning("reorder window cut to %d ids: half the ring's %d slots",
                        window_size, ring.geometry.n_slots)
        window: ReorderWindow[ImageMeta] = ReorderWindow(window_size, args.reorder_timeout)
        publisher = MetadataPublisher.for_config(config)
    except BaseException:
        ring.close()
        raise
    try:
        sockets: Inputs
        if reader == "zmtp":
            sockets = ZmtpInputs(args.stream_address, connections,
                                 max_part_bytes=max(4 * ring.geometry.slot_bytes, MIN_PART_LIMIT),
                                 protocol_errors=counters.protocol_errors,
                                 reconnects=counters.reconnects)
        else:
            sockets = InputSockets(args.stream_address, connections, args.socket_type, rcvhwm=args.rcvhwm)
    except ZmtpInputError as error:
        publisher.close()
        ring.close()
        raise StartupError(str(error)) from None
    except BaseException:
        publisher.close()
        ring.close()
        raise
    decoder = frame_decoder(args.input_format, height, width, dtype, config.detector_type)
    pool = DecodePool(args.decode_threads) if args.decode_threads else None
    pipeline = ReceiverPipeline(decoder, SlotWriter(ring, height, width, dtype), window,
                                publisher.publish, counters, pool, sources=connections,
                                publish_all=publisher.publish_all)
    log.info(
        "receiving %s from %s over %d %s connection(s) (%s reader) into %s (%d slots of %d bytes), "
        "metadata on %s",
        args.input_format, args.stream_address, connections, args.socket_type, reader, ring.name,
        ring.geometry.n_slots, ring.geometry.slot_bytes, publisher.address,
    )
    return ReceiverService(sockets, pipeline, ring, publisher, stats)
