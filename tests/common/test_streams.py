"""Metadata streams over real ZeroMQ ipc sockets, with a real publisher process.

Every test runs with both subscriber transports: the own ZMTP reader (the default) and
libzmq's SUB (the fallback and the reference): both must behave the same.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from multiprocessing.process import BaseProcess

import pytest
import zmq

from stddaq_common.bus import metadata_stream as streams
from stddaq_common.bus.metadata import Dtype, ImageMeta, encode_image_metadata
from stddaq_common.bus.metadata_stream import MetadataPublisher, MetadataSubscriber, StreamError
from stddaq_common.config.model import parse_config
from stddaq_common.names import ipc_address
from tests.common.configs import pco_config
from tests.common.stream_peers import (
    PROBE_ID,
    bind_and_crash,
    probe,
    publish_sequence,
    sequence_meta,
)

SPAWN = multiprocessing.get_context("spawn")
HANG_GUARD_MS = 20_000
"""Only guards against a hang; a passing run never waits this long."""


@pytest.fixture(autouse=True, params=[streams.ZMTP, streams.LIBZMQ])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The subscriber transport every MetadataSubscriber of the test uses."""
    monkeypatch.setenv(streams.TRANSPORT_ENV, request.param)
    return str(request.param)


@pytest.fixture()
def ipc_dir() -> Iterator[str]:
    """A short private directory for ipc socket files (Unix paths are limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="stddaq-st-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def address(ipc_dir: str) -> str:
    return ipc_address("det", "image", ipc_dir)


def path_of(address: str) -> str:
    return address.removeprefix("ipc://")


def stop(process: BaseProcess) -> None:
    """Wait for a child we started; terminate it (by its own handle) if it hangs."""
    process.join(HANG_GUARD_MS / 1000)
    if process.is_alive():
        process.terminate()
        process.join()


def connect(publisher: MetadataPublisher, subscriber: MetadataSubscriber) -> None:
    """Send probes until the subscriber gets one (ZeroMQ drops PUB messages sent before a
    subscription arrives), then read the probes still in flight."""
    for _ in range(HANG_GUARD_MS // 10):
        publisher.publish(probe())
        if subscriber.receive(timeout_ms=10) is not None:
            break
    else:
        pytest.fail("the subscriber never connected")
    while subscriber.receive(timeout_ms=50) is not None:
        pass


def next_real(subscriber: MetadataSubscriber) -> ImageMeta | None:
    """The next message that is not a (late) probe, or None after the hang guard."""
    while True:
        meta = subscriber.receive(timeout_ms=HANG_GUARD_MS)
        if meta is None or meta.image_id != PROBE_ID:
            return meta


def test_all_messages_from_a_publisher_process_arrive_in_order_and_intact(address: str) -> None:
    count = 5000
    go, done, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(target=publish_sequence, args=(address, count, go, done, results))
    child.start()
    try:
        with MetadataSubscriber(address) as subscriber:
            first = subscriber.receive(timeout_ms=HANG_GUARD_MS)
            assert first is not None and first.image_id == PROBE_ID
            go.set()
            received: list[ImageMeta] = []
            while len(received) < count:
                meta = subscriber.receive(timeout_ms=HANG_GUARD_MS)
                assert meta is not None, f"stream stopped after {len(received)} messages"
                if meta.image_id != PROBE_ID:
                    received.append(meta)
            done.set()
            published, _dropped = results.get(timeout=HANG_GUARD_MS / 1000)
            assert subscriber.bad_messages == 0
    finally:
        done.set()
        stop(child)
    assert child.exitcode == 0
    assert published == count
    assert [m.image_id for m in received] == list(range(1, count + 1))
    mismatched = [m for i, m in enumerate(received, 1) if m != sequence_meta(i)]
    assert mismatched == []


def test_receive_returns_none_on_timeout(address: str) -> None:
    with MetadataSubscriber(address, timeout_ms=20) as subscriber:
        assert subscriber.receive() is None  # no publisher at all
        with MetadataPublisher(address):
            assert subscriber.receive(timeout_ms=20) is None  # a silent publisher
            assert subscriber.receive_raw(timeout_ms=0) is None
        assert subscriber.received == 0 and subscriber.bad_messages == 0


def test_negative_timeout_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="timeout_ms"):
        MetadataSubscriber(address, timeout_ms=-1)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff",  # a varint that never ends
        b"\x0a\x05ab",  # a length-delimited field longer than the message
        b"\x0f",  # wire type 7 does not exist
        b"\x28\x03",  # dtype = 3: not an ImageMetadataDtype value
        b"\x30\x09",  # status = 9: not an ImageMetadataStatus value
    ],
)
def test_garbage_is_counted_and_skipped(
    address: str, garbage: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(streams, "_BAD_MESSAGE_LOG_INTERVAL_S", 3600.0)
    good = ImageMeta(42, 10, 20, 400, Dtype.UINT16)
    with MetadataPublisher(address) as publisher, MetadataSubscriber(address) as subscriber:
        connect(publisher, subscriber)
        caplog.set_level(logging.WARNING, logger="stddaq_common.bus.metadata_stream")
        for _ in range(5):
            assert publisher.publish_bytes(garbage)
        assert publisher.publish(good)
        assert next_real(subscriber) == good
        assert subscriber.bad_messages == 5
    warnings = [r.getMessage() for r in caplog.records if r.name == "stddaq_common.bus.metadata_stream"]
    assert len(warnings) == 1, "bad messages must be logged rate-limited"
    assert address in warnings[0] and garbage[:16].hex() in warnings[0]


def test_multipart_messages_are_bad_for_both_receive_calls(address: str) -> None:
    good = encode_image_metadata(ImageMeta(7, 1, 1, 1, Dtype.UINT8))
    raw_pub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
    raw_pub.setsockopt(zmq.LINGER, 0)
    raw_pub.bind(address)
    try:
        with MetadataSubscriber(address) as subscriber:
            for _ in range(HANG_GUARD_MS // 10):
                raw_pub.send(good)
                if subscriber.receive_raw(timeout_ms=10) is not None:
                    break
            while subscriber.receive_raw(timeout_ms=50) is not None:
                pass
            raw_pub.send_multipart([good, b"extra", b"parts"])
            raw_pub.send(good)
            assert subscriber.receive_raw(timeout_ms=HANG_GUARD_MS) == good
            raw_pub.send_multipart([good, good])
            raw_pub.send(good)
            meta = subscriber.receive(timeout_ms=HANG_GUARD_MS)
            assert meta is not None and meta.image_id == 7
            assert subscriber.bad_messages == 2
    finally:
        raw_pub.close()
        os.unlink(path_of(address))


def test_close_removes_the_socket_file(address: str) -> None:
    publisher = MetadataPublisher(address)
    assert stat.S_ISSOCK(os.lstat(path_of(address)).st_mode)
    publisher.close()
    assert not os.path.exists(path_of(address))
    publisher.close()  # a second close is harmless


def test_binding_over_the_stale_file_of_a_crashed_publisher(address: str) -> None:
    bound = SPAWN.Event()
    child = SPAWN.Process(target=bind_and_crash, args=(address, bound))
    child.start()
    stop(child)
    assert bound.is_set() and child.exitcode == 3
    assert stat.S_ISSOCK(os.lstat(path_of(address)).st_mode), "the crash left its socket file"
    with MetadataPublisher(address) as publisher, MetadataSubscriber(address) as subscriber:
        connect(publisher, subscriber)
        assert publisher.publish(ImageMeta(5, 1, 1, 1, Dtype.UINT8))
        meta = next_real(subscriber)
        assert meta is not None and meta.image_id == 5
    assert not os.path.exists(path_of(address))


def test_binding_over_a_plain_stale_unix_socket(address: str) -> None:
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(path_of(address))
    leftover.close()
    with MetadataPublisher(address):
        pass
    assert not os.path.exists(path_of(address))


def test_a_live_publisher_is_not_replaced(address: str) -> None:
    with MetadataPublisher(address) as first, MetadataSubscriber(address) as subscriber:
        with pytest.raises(StreamError, match="another live publisher"):
            MetadataPublisher(address)
        connect(first, subscriber)
        assert first.publish(ImageMeta(9, 1, 1, 1, Dtype.UINT8))
        meta = next_real(subscriber)
        assert meta is not None and meta.image_id == 9


def test_a_file_that_is_not_a_socket_is_left_alone(address: str) -> None:
    with open(path_of(address), "w") as file:
        file.write("user data")
    with pytest.raises(StreamError, match="not a socket"):
        MetadataPublisher(address)
    with open(path_of(address)) as file:
        assert file.read() == "user data"


def test_setup_problems_are_clear_errors(ipc_dir: str) -> None:
    too_long = "ipc://" + os.path.join(ipc_dir, "x" * 120)
    with pytest.raises(StreamError, match="at most 107"):
        MetadataPublisher(too_long)
    missing = "ipc://" + os.path.join(ipc_dir, "no-such-dir", "det-image")
    with pytest.raises(StreamError, match="does not exist"):
        MetadataPublisher(missing)


def test_a_subscriber_that_never_reads_never_blocks_the_publisher(address: str) -> None:
    hwm = 10
    attempts = 30_000
    accepted: list[int] = []
    with (
        MetadataPublisher(address, sndhwm=hwm, count_drops=True) as publisher,
        MetadataSubscriber(address, rcvhwm=hwm) as subscriber,
    ):
        connect(publisher, subscriber)
        before = publisher.published
        for image_id in range(1, attempts + 1):  # NOBLOCK: a blocking send would hang here
            if publisher.publish(ImageMeta(image_id, 1, 1, 1, Dtype.UINT8)):
                accepted.append(image_id)
        assert publisher.dropped > 0, "a full subscriber queue must show as drops"
        assert publisher.published - before + publisher.dropped == attempts
        assert len(accepted) == publisher.published - before
        # Every accepted message still arrives: a drop is only ever the counted kind.
        received: list[int] = []
        while len(received) < len(accepted):
            meta = next_real(subscriber)
            assert meta is not None, f"{len(accepted) - len(received)} accepted messages lost"
            received.append(meta.image_id)
        assert received == accepted


def test_plain_pub_mode_never_reports_drops(address: str) -> None:
    with (
        MetadataPublisher(address, sndhwm=10, count_drops=False) as publisher,
        MetadataSubscriber(address, rcvhwm=10) as subscriber,
    ):
        connect(publisher, subscriber)
        for image_id in range(1, 30_001):
            assert publisher.publish(ImageMeta(image_id, 1, 1, 1, Dtype.UINT8))
        assert publisher.dropped == 0


def test_for_config_uses_the_detector_name_and_ipc_dir(ipc_dir: str) -> None:
    config = parse_config(pco_config("cam7", 4, 4, ipc_dir=ipc_dir))
    with (
        MetadataPublisher.for_config(config, "blosc2") as publisher,
        MetadataSubscriber.for_config(config, "blosc2") as subscriber,
    ):
        assert publisher.address == f"ipc://{ipc_dir}/cam7-blosc2"
        assert subscriber.address == publisher.address
        assert os.path.exists(os.path.join(ipc_dir, "cam7-blosc2"))
        connect(publisher, subscriber)


def test_a_subscriber_follows_a_restarted_publisher(address: str) -> None:
    with MetadataSubscriber(address) as subscriber:
        with MetadataPublisher(address) as first:
            connect(first, subscriber)
            assert first.publish(ImageMeta(1, 1, 1, 1, Dtype.UINT8))
            meta = next_real(subscriber)
            assert meta is not None and meta.image_id == 1
        with MetadataPublisher(address) as second:  # ZeroMQ reconnects the same SUB socket
            connect(second, subscriber)
            assert second.publish(ImageMeta(2, 1, 1, 1, Dtype.UINT8))
            meta = next_real(subscriber)
            assert meta is not None and meta.image_id == 2


def test_queues_must_be_bounded(address: str) -> None:
    with pytest.raises(ValueError, match="sndhwm"):
        MetadataPublisher(address, sndhwm=0)
    with pytest.raises(ValueError, match="rcvhwm"):
        MetadataSubscriber(address, rcvhwm=0)
    assert not os.path.exists(path_of(address))
