"""The metadata subscriber's own ZMTP reader against real peers: pyzmq PUB sockets (libzmq
4.3) and a hand-driven Unix-socket peer that puts exact bytes on the wire (split frames,
batches, PING, protocol faults, a ZMTP 2 peer). libzmq's SUB is the reference where both
can be compared."""

from __future__ import annotations

import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator

import pytest
import zmq

from stddaq_common.bus import metadata_stream as streams
from stddaq_common.bus.metadata_stream import MetadataSubscriber
from stddaq_common.names import ipc_address
from stddaq_common.wire import zmtp
from tests.common.zmtp_hand import HandListener

HANG_GUARD_MS = 20_000
"""Only guards against a hang; a passing run never waits this long."""
PROBE = b"probe"


@pytest.fixture()
def address() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="stddaq-zs-", dir="/tmp")
    yield ipc_address("det", "image", directory)
    shutil.rmtree(directory, ignore_errors=True)


def numbered(index: int) -> bytes:
    """Message `index`: its number, then filler of a size that varies (short and long frames)."""
    return struct.pack(">Q", index) + bytes([index % 251]) * (index * 37 % 700)


def number_of(payload: bytes) -> int:
    return int(struct.unpack_from(">Q", payload)[0])


def pub_socket(address: str, sndhwm: int = 1000) -> zmq.Socket[bytes]:
    pub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, sndhwm)
    pub.bind(address)
    return pub


def until_connected(pub: zmq.Socket[bytes], *subscribers: MetadataSubscriber) -> None:
    """Send probes until every subscriber got one, then read the probes still in flight."""
    waiting = list(subscribers)
    for _ in range(HANG_GUARD_MS // 10):
        pub.send(PROBE)
        waiting = [s for s in waiting if s.receive_raw(timeout_ms=10) is None]
        if not waiting:
            break
    else:
        pytest.fail("a subscriber never connected")
    pub.send(b"\xff" * 9)  # an end marker: everything before it is a probe
    for subscriber in subscribers:
        while subscriber.receive_raw(timeout_ms=HANG_GUARD_MS) != b"\xff" * 9:
            pass


def take(subscriber: MetadataSubscriber, count: int) -> list[bytes]:
    """`count` messages, in batches as the driver takes them."""
    got: list[bytes] = []
    while len(got) < count:
        batch = subscriber.receive_raw_batch(64, timeout_ms=HANG_GUARD_MS)
        assert batch, f"the stream stopped after {len(got)} of {count} messages"
        got += batch
    return got


def test_a_pyzmq_pub_reaches_the_own_reader_exactly_as_libzmqs_sub(address: str) -> None:
    count = 20_000
    pub = pub_socket(address, sndhwm=0)  # unbounded: nothing may be dropped here
    try:
        with (
            MetadataSubscriber(address, transport=streams.ZMTP) as own,
            MetadataSubscriber(address, transport=streams.LIBZMQ) as reference,
        ):
            assert (own.transport, reference.transport) == (streams.ZMTP, streams.LIBZMQ)
            until_connected(pub, own, reference)
            before = own.received, reference.received  # the probes each got differ
            sent = [numbered(index) for index in range(1, count + 1)]
            for payload in sent:
                pub.send(payload)
            got = take(own, count)
            assert got == sent
            assert take(reference, count) == got
            assert own.received - before[0] == reference.received - before[1] == count
            assert own.bad_messages == reference.bad_messages == 0
            assert own.connects == 1 and own.protocol_errors == 0
    finally:
        pub.close()


@pytest.mark.parametrize("transport", [streams.ZMTP, streams.LIBZMQ])
def test_a_subscriber_that_does_not_read_loses_messages_at_the_pubs_hwm(
    address: str, transport: str
) -> None:
    count = 100_000  # about 10 MB: far more than a socket buffer and the queues hold
    pub = pub_socket(address, sndhwm=10)
    try:
        with MetadataSubscriber(address, transport=transport, rcvhwm=10) as subscriber:
            until_connected(pub, subscriber)
            for index in range(1, count + 1):
                pub.send(struct.pack(">Q", index) + bytes(92))
            pub.send(b"last")  # sent after the subscriber reads again: must arrive
            got: list[int] = []
            while True:
                batch = subscriber.receive_raw_batch(64, timeout_ms=200)
                if not batch:
                    break
                got += [number_of(p) for p in batch if p != b"last"]
            assert 0 < len(got) < count, "a PUB drops what a full subscriber cannot take"
            assert got == sorted(set(got)), "what arrives, arrives once and in order"
            assert got[0] == 1, "the first messages fill the queues; later ones are dropped"
            pub.send(b"after")
            assert subscriber.receive_raw(timeout_ms=HANG_GUARD_MS) == b"after"
            assert subscriber.bad_messages == 0
    finally:
        pub.close()


class HandPeer(HandListener):
    """A PUB side written by hand on a Unix socket: exact bytes, exact splits."""

    def __init__(self, address: str) -> None:
        self.path = address.removeprefix("ipc://")
        super().__init__(self.path)

    def accept(self, subscriber: MetadataSubscriber) -> socket.socket:
        """The subscriber's next connection (it connects within its receive calls)."""
        return self.accept_while(lambda: subscriber.receive_raw(timeout_ms=10), "the subscriber")

    def handshake(self, subscriber: MetadataSubscriber) -> None:
        """Accept, check the subscriber's greeting and READY, answer, take the subscription."""
        self.accept(subscriber)
        greeting = zmtp.parse_greeting(self.read(zmtp.GREETING_BYTES))
        assert (greeting.major, greeting.mechanism, greeting.as_server) == (3, "NULL", False)
        ready = zmtp.encode_ready("SUB")
        assert self.read(len(ready)) == ready
        self.send(zmtp.greeting(minor=1) + zmtp.encode_ready("PUB"))
        subscriber.receive_raw(timeout_ms=0)  # takes the READY and answers
        assert self.read(3) == b"\x00\x01\x01", "a subscription to everything (ZMTP 3.0 form)"


@pytest.fixture()
def peer(address: str) -> Iterator[HandPeer]:
    hand = HandPeer(address)
    yield hand
    hand.close()


def test_a_message_split_anywhere_across_reads_arrives_whole(address: str, peer: HandPeer) -> None:
    short, long = b"s" * 40, b"L" * 300
    wire = zmtp.encode_frame(short) + zmtp.encode_frame(long)
    with MetadataSubscriber(address, transport=streams.ZMTP) as subscriber:
        peer.handshake(subscriber)
        for split in range(1, len(wire)):
            peer.send(wire[:split])
            whole_first = split >= len(zmtp.encode_frame(short))
            got = subscriber.receive_raw_batch(8, timeout_ms=0)
            assert got == ([short] if whole_first else []), f"split at octet {split}"
            peer.send(wire[split:])
            rest = [long] if whole_first else [short, long]
            while rest:
                message = subscriber.receive_raw(timeout_ms=HANG_GUARD_MS)
                assert message == rest.pop(0), f"split at octet {split}"
        assert subscriber.bad_messages == 0
        assert subscriber.received == 2 * (len(wire) - 1)


def test_every_queued_message_comes_in_one_batch(address: str, peer: HandPeer) -> None:
    with MetadataSubscriber(address, transport=streams.ZMTP) as subscriber:
        peer.handshake(subscriber)
        payloads = [numbered(index) for index in range(1, 201)]
        peer.send(b"".join(zmtp.encode_frame(p) for p in payloads))  # in the socket now
        batches = [subscriber.receive_raw_batch(64, timeout_ms=0) for _ in range(5)]
        assert [len(b) for b in batches] == [64, 64, 64, 8, 0]
        assert [p for b in batches for p in b] == payloads


def test_multipart_and_commands_between_messages(address: str, peer: HandPeer) -> None:
    with MetadataSubscriber(address, transport=streams.ZMTP) as subscriber:
        peer.handshake(subscriber)
        wire = (
            zmtp.encode_message([b"a", b"b" * 300, b"c"])
            + zmtp.encode_ping(0, b"ctx")
            + zmtp.encode_frame(b"good")
        )
        for octet in range(len(wire)):  # one octet per read: every state is crossed
            peer.send(wire[octet : octet + 1])
            subscriber.receive_raw(timeout_ms=0)
        assert subscriber.bad_messages == 1
        assert subscriber.received == 1
        pong = zmtp.encode_pong(b"ctx")
        assert peer.read(len(pong)) == pong


def test_a_peer_that_breaks_the_protocol_is_dropped_and_connected_again(
    address: str, peer: HandPeer
) -> None:
    with MetadataSubscriber(address, transport=streams.ZMTP) as subscriber:
        peer.handshake(subscriber)
        first = peer.conn
        peer.send(bytes((0x80, 1, 0)))  # a reserved flag bit
        assert subscriber.receive_raw(timeout_ms=0) is None
        assert subscriber.protocol_errors == 1
        assert first is not None and first.recv(1) == b"", "the connection was closed"
        peer.handshake(subscriber)
        peer.send(zmtp.encode_frame(b"again"))
        assert subscriber.receive_raw(timeout_ms=HANG_GUARD_MS) == b"again"
        assert subscriber.connects == 2


def test_a_peer_that_is_not_a_publisher_is_refused(address: str, peer: HandPeer) -> None:
    with MetadataSubscriber(address, transport=streams.ZMTP) as subscriber:
        peer.accept(subscriber)
        peer.read(zmtp.GREETING_BYTES + len(zmtp.encode_ready("SUB")))
        peer.send(zmtp.greeting(minor=1) + zmtp.encode_ready("PUSH"))
        assert subscriber.receive_raw(timeout_ms=0) is None
        assert subscriber.protocol_errors == 1


def test_a_zmtp2_peer_makes_the_subscriber_fall_back_to_libzmq(
    address: str, peer: HandPeer
) -> None:
    with MetadataSubscriber(address, transport=streams.ZMTP) as subscriber:
        peer.accept(subscriber)
        peer.send(b"\xff" + bytes(7) + b"\x01\x7f" + b"\x01\x01")  # ZMTP 2.0: revision 1
        assert subscriber.receive_raw(timeout_ms=0) is None
        assert subscriber.transport == streams.LIBZMQ
        assert isinstance(subscriber.poll_handle, zmq.Socket)
        # libzmq's SUB now connects by itself and sends its signature (the version follows
        # once it has the peer's signature).
        peer.listener.settimeout(HANG_GUARD_MS / 1000)
        conn, _ = peer.listener.accept()
        with conn:
            conn.settimeout(HANG_GUARD_MS / 1000)
            opening = b""
            while len(opening) < zmtp.SIGNATURE_BYTES:
                opening += conn.recv(zmtp.SIGNATURE_BYTES - len(opening))
            zmtp.check_signature(opening)


def test_the_transport_is_chosen_by_argument_environment_and_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(streams.TRANSPORT_ENV, raising=False)
    assert streams.choose_transport("ipc:///tmp/x") == streams.ZMTP
    assert streams.choose_transport("tcp://127.0.0.1:5") == streams.LIBZMQ
    assert streams.choose_transport("ipc:///tmp/x", streams.LIBZMQ) == streams.LIBZMQ
    monkeypatch.setenv(streams.TRANSPORT_ENV, "libzmq")
    assert streams.choose_transport("ipc:///tmp/x") == streams.LIBZMQ
    monkeypatch.setenv(streams.TRANSPORT_ENV, "nanomsg")
    with pytest.raises(ValueError, match="nanomsg"):
        streams.choose_transport("ipc:///tmp/x")
