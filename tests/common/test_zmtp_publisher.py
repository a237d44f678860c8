"""The metadata PUB spoken without libzmq (bus.zmtp_publisher) against real peers: libzmq
SUB sockets (pyzmq) and raw Unix-socket peers that speak ZMTP 3.1 or break it."""

from __future__ import annotations

import select
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from stddaq_common.bus.metadata import Dtype, ImageMeta
from stddaq_common.bus.metadata_stream import MetadataPublisher, MetadataSubscriber
from stddaq_common.bus.zmtp_publisher import ZmtpPublisher
from stddaq_common.wire import zmtp
from tests.common.zmtp_hand import connect_unix, read_exactly

DEADLINE_S = 30.0
"""Only catches hangs: every wait below ends on a count."""


@pytest.fixture
def path(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / f"pub-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _until(condition: Callable[[], bool], what: str, step: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if step is not None:
            step()
        time.sleep(0.002)


def _sub(context: zmq.Context[zmq.Socket[bytes]], path: str, prefix: bytes) -> zmq.Socket[bytes]:
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, prefix)
    sub.connect(f"ipc://{path}")
    return sub


def _joined(publisher: ZmtpPublisher, sub: zmq.Socket[bytes], probe: bytes) -> None:
    """Publish `probe` until `sub` gets one (a subscription travels like any message), then
    read the probes still in flight."""

    def got_one() -> bool:
        publisher.send(probe)
        return sub.poll(10) != 0

    _until(got_one, "the subscriber to join")
    while sub.poll(50):
        assert sub.recv() == probe


def test_libzmq_subscribers_get_every_matching_message_in_order(
    path: str, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    publisher = ZmtpPublisher(path, sndhwm=1000, count_drops=False)
    everything = _sub(context, path, b"")
    only_a = _sub(context, path, b"A")
    try:
        _joined(publisher, everything, b"A-probe")
        _joined(publisher, only_a, b"A-probe")
        while everything.poll(50):
            everything.recv()
        messages = [(b"A" if k % 3 else b"B") + k.to_bytes(4, "big") + bytes(k % 300) for k in range(600)]
        for message in messages:  # short and long frames (bodies over 255 octets)
            assert publisher.send(message)
        got_all = [everything.recv() for _ in messages]
        got_a = [only_a.recv() for _ in range(sum(m[:1] == b"A" for m in messages))]
    finally:
        everything.close()
        only_a.close()
        publisher.close()
    assert got_all == messages
    assert got_a == [m for m in messages if m[:1] == b"A"]


def _read_frame(peer: socket.socket) -> tuple[int, bytes]:
    flags, size = read_exactly(peer, 2)
    if flags & zmtp.LONG:
        size = int.from_bytes(bytes([size]) + read_exactly(peer, 7), "big")
    return flags, read_exactly(peer, size)


def test_a_raw_zmtp_31_peer_sees_the_exact_bytes_of_a_libzmq_pub(path: str) -> None:
    publisher = ZmtpPublisher(path, sndhwm=100, count_drops=False)
    peer = connect_unix(path)
    try:
        peer.sendall(zmtp.greeting(1) + zmtp.encode_ready("SUB"))
        greeting = zmtp.parse_greeting(read_exactly(peer, zmtp.GREETING_BYTES))
        assert (greeting.major, greeting.mechanism, greeting.as_server) == (3, "NULL", False)
        flags, body = _read_frame(peer)
        name, data = zmtp.parse_command(body)
        assert flags == zmtp.COMMAND and name == "READY"
        assert zmtp.peer_socket_type(zmtp.parse_properties(data), "SUB") == "PUB"
        peer.sendall(zmtp.encode_command("SUBSCRIBE", b"x") + zmtp.encode_ping(0, b"ctx"))
        flags, body = _read_frame(peer)
        assert flags == zmtp.COMMAND and zmtp.parse_command(body)[0] == "PONG"
        assert bytes(zmtp.parse_command(body)[1]) == b"ctx"  # PONG after SUBSCRIBE: it is applied
        publisher.send(b"y-not for this peer")
        publisher.send(b"x1")
        publisher.send(b"x" * 300)
        assert _read_frame(peer) == (0, b"x1")
        assert _read_frame(peer) == (zmtp.LONG, b"x" * 300)
        # ZMTP 3.0 style: a subscription message (first octet 1) after a CANCEL command
        peer.sendall(zmtp.encode_command("CANCEL", b"x") + zmtp.encode_frame(b"\x01z"))
        _until(lambda: publisher.send(b"z-after") and _has_input(peer), "the new subscription")
        publisher.send(b"x-cancelled")
        publisher.send(b"z-last")
        bodies = [_read_frame(peer)[1]]
        while bodies[-1] != b"z-last":
            bodies.append(_read_frame(peer)[1])
        assert set(bodies[:-1]) == {b"z-after"}
    finally:
        peer.close()
        publisher.close()


def _has_input(peer: socket.socket) -> bool:
    return bool(select.select([peer], [], [], 0)[0])


def test_a_peer_that_breaks_zmtp_is_dropped_and_the_others_go_on(
    path: str, context: zmq.Context[zmq.Socket[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    publisher = ZmtpPublisher(path, sndhwm=100, count_drops=False)
    good = _sub(context, path, b"")
    bad = connect_unix(path)
    quitter = connect_unix(path)
    try:
        bad.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(64))
        quitter.sendall(zmtp.greeting(1) + zmtp.encode_ready("SUB") + zmtp.encode_frame(b"\x01"))
        _until(lambda: b"dropping a subscriber" in caplog.text.encode(), "the bad peer to be dropped")
        assert "not a ZMTP peer" in caplog.text
        assert read_exactly(bad, zmtp.GREETING_BYTES)[:1] == b"\xff"
        _until(lambda: bad.recv(4096) == b"", "the bad peer's connection to close")
        quitter.close()  # a subscriber that goes away mid-stream costs nothing but its messages
        _joined(publisher, good, b"probe")
        for k in range(200):
            assert publisher.send(k.to_bytes(2, "big"))
        assert [good.recv() for _ in range(200)] == [k.to_bytes(2, "big") for k in range(200)]
    finally:
        good.close()
        bad.close()
        publisher.close()


def test_count_drops_sends_to_nobody_when_a_subscriber_queue_is_full(path: str) -> None:
    publisher = ZmtpPublisher(path, sndhwm=5, count_drops=True)
    peer = connect_unix(path)  # subscribes, then never reads
    try:
        peer.sendall(zmtp.greeting(1) + zmtp.encode_ready("SUB") + zmtp.encode_frame(b"\x01"))
        refused = 0
        accepted = 0
        deadline = time.monotonic() + DEADLINE_S
        while refused == 0:
            assert time.monotonic() < deadline, "the publisher never reported a full queue"
            if publisher.send(b"m" * 200):
                accepted += 1
            else:
                refused += 1
        assert accepted > 0
    finally:
        peer.close()
        publisher.close()


@pytest.mark.parametrize("kind", ["tcp", "abstract-ipc"])
def test_addresses_without_a_socket_file_keep_libzmqs_pub(
    kind: str, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """MetadataPublisher uses its own PUB only on an ipc:// path; tcp:// and abstract
    ipc://@name still work, through libzmq, with the same messages."""
    if kind == "tcp":
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
        probe.close()
    else:
        address = f"ipc://@stddaq-test-{uuid.uuid4().hex[:10]}"
    publisher = MetadataPublisher(address)
    subscriber = MetadataSubscriber(address, timeout_ms=10)
    try:
        assert publisher._zmtp is None
        _until(
            lambda: publisher.publish(ImageMeta(1, 2, 3, 6, Dtype.UINT8))
            and subscriber.receive() is not None,
            "the subscriber to join",
        )
        assert publisher.publish(ImageMeta(77, 2, 3, 6, Dtype.UINT8))
        _until(lambda: (meta := subscriber.receive()) is not None and meta.image_id == 77, "image 77")
    finally:
        subscriber.close()
        publisher.close()


def test_send_all_gives_each_subscriber_every_matching_message_in_order_through_full_buffers(
    path: str, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Batches (one send per subscriber, joined frames) of short and long messages, into a
    subscriber that reads slowly: its socket fills, the rest of a batch is queued message
    by message and pushed later; every matching message arrives once, whole, in order."""
    publisher = ZmtpPublisher(path, sndhwm=100_000, count_drops=False)
    everything = _sub(context, path, b"")
    everything.setsockopt(zmq.RCVHWM, 4)
    only_a = _sub(context, path, b"A")
    for sub in (everything, only_a):
        sub.setsockopt(zmq.RCVTIMEO, int(DEADLINE_S * 1000))  # a lost message fails, not hangs
    try:
        _joined(publisher, everything, b"A-probe")
        _joined(publisher, only_a, b"A-probe")
        for sub in (everything, only_a):
            while sub.poll(50):
                sub.recv()
        messages = [
            (b"A" if k % 3 else b"B") + k.to_bytes(4, "big") + bytes(k * 997 % 70_000) for k in range(400)
        ]
        batches = [messages[k : k + 1 + k % 7] for k in range(0, len(messages), 7)]
        sent = [message for batch in batches for message in batch]
        for batch in batches:
            assert publisher.send_all(batch)
        got_all = [everything.recv() for _ in sent]
        got_a = [only_a.recv() for _ in range(sum(m[:1] == b"A" for m in sent))]
    finally:
        everything.close()
        only_a.close()
        publisher.close()
    assert got_all == sent
    assert got_a == [m for m in sent if m[:1] == b"A"]


def test_send_all_steps_aside_with_count_drops(path: str) -> None:
    """With count_drops each message needs its own answer: send_all sends nothing, says False."""
    publisher = ZmtpPublisher(path, sndhwm=5, count_drops=True)
    try:
        assert not publisher.send_all([b"a", b"b"])
    finally:
        publisher.close()


def test_publish_all_sends_the_metadata_publish_would_in_order(path: str) -> None:
    address = f"ipc://{path}"
    publisher = MetadataPublisher(address)
    subscriber = MetadataSubscriber(address, timeout_ms=10)
    try:
        probe = ImageMeta(0, 4, 4, 32, Dtype.UINT16)
        _until(lambda: publisher.publish(probe) and subscriber.receive() is not None,
               "the subscriber to join")
        while subscriber.receive() is not None:
            pass
        metas = [ImageMeta(image_id, 4, 4, 32, Dtype.UINT16) for image_id in range(1, 40)]
        for start in range(0, len(metas), 5):
            assert publisher.publish_all(metas[start : start + 5])
        got = [subscriber.receive(int(DEADLINE_S * 1000)) for _ in metas]
        assert publisher.published >= len(metas)
    finally:
        subscriber.close()
        publisher.close()
    assert got == metas
