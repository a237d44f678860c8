"""Metadata stream rates: MetadataPublisher -> MetadataSubscriber over ipc, beside raw pyzmq.

Figures (each beside a ceiling measured in the same run):
- `metadata_stream_decoded`: publish(ImageMeta) (encode included) -> receive() (decode
  included) over ipc, subscriber in a spawned process; ceiling: raw pyzmq PUB -> SUB of the
  same encoded bytes, same socket options, same process layout.
- `metadata_stream_bytes`: publish_bytes -> receive_raw (our socket layer, no codec); same
  ceiling.
- `metadata_encode` / `metadata_decode`: encode_image_metadata / decode_image_metadata per
  second in one process; ceilings: the generated protobuf class alone (construct and
  serialise; parse only).

The publisher retries a message that did not fit (publish returned False), so every message
is delivered; `lost` counts messages the subscriber never saw.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import zmq

from bench.harness import BenchRecord, Stopwatch, best_of, rate, record
from stddaq_common._proto import std_daq_protocol_pb2 as pb  # ceiling only: the raw codec
from stddaq_common.bus.metadata import (
    Dtype,
    ImageMeta,
    PcoInfo,
    decode_image_metadata,
    encode_image_metadata,
)
from stddaq_common.bus.metadata_stream import DEFAULT_HWM, MetadataPublisher, MetadataSubscriber

SAMPLE = ImageMeta(
    image_id=123_456_789,
    height=2016,
    width=2016,
    size=2016 * 2016 * 2,
    dtype=Dtype.UINT16,
    detail=PcoInfo(1_700_000_000, 123_456_789, "X02DA-CAM1:FPICTURE"),
)
PAYLOAD = encode_image_metadata(SAMPLE)
PROBE = ImageMeta(0, 1, 1, 1, Dtype.UINT8)
RAW_PROBE = b"probe"
_END_WAIT_MS = 3000
"""A subscriber that sees nothing for this long stops counting (the rest is lost)."""

# Modes: how the subscriber receives. "decoded" and "bytes" use stddaq_common.bus.metadata_stream.
DECODED, BYTES, RAW = "decoded", "bytes", "raw"


def _raw_pub(address: str) -> zmq.Socket[bytes]:
    """A raw PUB with the same options as MetadataPublisher (LINGER 0, HWM, NODROP)."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, DEFAULT_HWM)
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    sock.bind(address)
    return sock


def _raw_sub(address: str) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, DEFAULT_HWM)
    sock.setsockopt(zmq.RCVTIMEO, _END_WAIT_MS)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(address)
    return sock


def _count_raw(address: str, count: int, connected: Event) -> tuple[int, float]:
    sock = _raw_sub(address)
    try:
        try:
            message = sock.recv()
        except zmq.Again:
            return 0, 0.0
        connected.set()
        while message == RAW_PROBE:
            message = sock.recv()
        received, start, end = 1, time.perf_counter(), 0.0
        recv = sock.recv
        try:
            while received < count:
                if recv() != RAW_PROBE:
                    received += 1
            end = time.perf_counter()
        except zmq.Again:
            end = time.perf_counter()
        return received, end - start
    finally:
        sock.close()


def _count_streams(address: str, count: int, connected: Event, mode: str) -> tuple[int, float]:
    with MetadataSubscriber(address, timeout_ms=_END_WAIT_MS) as subscriber:
        while True:  # probes (image_id 0) until the first real message
            first = subscriber.receive()
            if first is None:
                return 0, 0.0
            connected.set()
            if first.image_id != 0:
                break
        received, start = 1, time.perf_counter()
        if mode == DECODED:
            receive = subscriber.receive
            while received < count and (meta := receive()) is not None:
                if meta.image_id:
                    received += 1
        else:
            receive_raw = subscriber.receive_raw
            probe = encode_image_metadata(PROBE)
            while received < count and (payload := receive_raw()) is not None:
                if payload != probe:
                    received += 1
        return received, time.perf_counter() - start


def subscribe_and_count(address: str, count: int, mode: str, connected: Event, out: Queue) -> None:  # type: ignore[type-arg]
    """Child process: receive `count` messages after the probes; put (received, seconds)."""
    if mode == RAW:
        out.put(_count_raw(address, count, connected))
    else:
        out.put(_count_streams(address, count, connected, mode))


def _stream_rate(mode: str, count: int, ipc_dir: str) -> tuple[float, int]:
    """Messages/s delivered end to end, and how many were lost."""
    context = multiprocessing.get_context("spawn")
    address = f"ipc://{ipc_dir}/bench-{mode}"
    connected, out = context.Event(), context.Queue()
    child = context.Process(
        target=subscribe_and_count, args=(address, count, mode, connected, out), daemon=True
    )
    if mode == RAW:
        sock = _raw_pub(address)

        def send_probe() -> bool:
            with contextlib.suppress(zmq.Again):
                sock.send(RAW_PROBE, zmq.NOBLOCK)
            return True

        def send() -> bool:
            try:
                sock.send(PAYLOAD, zmq.NOBLOCK)
            except zmq.Again:
                return False
            return True

        def close() -> None:
            sock.close()
            os.unlink(address.removeprefix("ipc://"))
    else:
        publisher = MetadataPublisher(address, count_drops=True)
        probe = encode_image_metadata(PROBE)

        def send_probe() -> bool:
            return publisher.publish_bytes(probe)

        if mode == DECODED:

            def send() -> bool:
                return publisher.publish(SAMPLE)
        else:

            def send() -> bool:
                return publisher.publish_bytes(PAYLOAD)

        close = publisher.close
    child.start()
    try:
        while not connected.wait(0.005):
            if not child.is_alive():
                raise RuntimeError(f"the {mode} subscriber process exited ({child.exitcode})")
            send_probe()
        for _ in range(count):
            while not send():
                time.sleep(0.0001)  # a full queue: let the subscriber catch up
        received, seconds = out.get(timeout=120)
    finally:
        child.join(30)
        if child.is_alive():
            child.terminate()
            child.join()
        close()
    return rate(received - 1, seconds), count - received


def _encode_rate(count: int) -> float:
    with Stopwatch() as watch:
        for _ in range(count):
            encode_image_metadata(SAMPLE)
    return rate(count, watch.seconds)


def _raw_encode_rate(count: int) -> float:
    detail = SAMPLE.detail
    assert isinstance(detail, PcoInfo)
    with Stopwatch() as watch:
        for _ in range(count):
            pb.ImageMetadata(
                image_id=SAMPLE.image_id,
                height=SAMPLE.height,
                width=SAMPLE.width,
                size=SAMPLE.size,
                dtype=pb.uint16,
                status=pb.good_image,
                compression=pb.none,
                pco=pb.PcoImageMetadata(
                    global_timestamp_sec=detail.global_timestamp_sec,
                    global_timestamp_ns=detail.global_timestamp_ns,
                    bsread_name=detail.bsread_name,
                ),
            ).SerializeToString()
    return rate(count, watch.seconds)


def _decode_rate(count: int) -> float:
    with Stopwatch() as watch:
        for _ in range(count):
            decode_image_metadata(PAYLOAD)
    return rate(count, watch.seconds)


def _raw_decode_rate(count: int) -> float:
    parse = pb.ImageMetadata.FromString
    with Stopwatch() as watch:
        for _ in range(count):
            parse(PAYLOAD)
    return rate(count, watch.seconds)


def run(quick: bool) -> list[BenchRecord]:
    """Stream, encode and decode rates of ImageMetadata, each beside its raw ceiling."""
    stream_repeats, codec_repeats = (1, 3) if quick else (3, 5)
    messages = 50_000 if quick else 300_000
    codec_ops = 50_000 if quick else 300_000
    records = []
    ipc_dir = tempfile.mkdtemp(prefix="stddaq-bench-", dir="/tmp")
    try:
        stream: dict[str, tuple[float, int]] = {}
        for mode in (RAW, BYTES, DECODED):
            runs = [_stream_rate(mode, messages, ipc_dir) for _ in range(stream_repeats)]
            stream[mode] = (max(r[0] for r in runs), sum(r[1] for r in runs))
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)
    ceiling = f"pyzmq PUB->SUB {len(PAYLOAD)} B over ipc, sub in a spawned process"
    raw_rate = stream[RAW][0]
    records.append(
        record(
            "metadata_stream_decoded (publish -> receive, spawned subscriber)",
            stream[DECODED][0],
            "msg/s",
            ceiling,
            raw_rate,
            lost=stream[DECODED][1],
        )
    )
    records.append(
        record(
            "metadata_stream_bytes (publish_bytes -> receive_raw, spawned subscriber)",
            stream[BYTES][0],
            "msg/s",
            ceiling,
            raw_rate,
            lost=stream[BYTES][1],
        )
    )
    records.append(
        record(
            "metadata_encode",
            best_of(codec_repeats, lambda: _encode_rate(codec_ops)),
            "msg/s",
            "protobuf (upb) construct + serialise",
            best_of(codec_repeats, lambda: _raw_encode_rate(codec_ops)),
        )
    )
    records.append(
        record(
            "metadata_decode",
            best_of(codec_repeats, lambda: _decode_rate(codec_ops)),
            "msg/s",
            "protobuf (upb) parse only",
            best_of(codec_repeats, lambda: _raw_decode_rate(codec_ops)),
        )
    )
    return records
