"""The driver -> writer command channel spoken without libzmq (bus.zmtp_push, bus.zmtp_pull,
bus.command_channel) against real peers: pyzmq PUSH and PULL sockets (libzmq 4.3, what
std_daq's C++ driver and writer use) and hand-driven Unix-socket peers that put exact
bytes on the wire (splits at every octet, PING, a peer that never reads, broken peers)."""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from stddaq_common.bus import command_channel as channel
from stddaq_common.bus.command_channel import (
    LibzmqPull,
    LibzmqPush,
    OwnPull,
    bind_command_push,
    connect_command_pull,
)
from stddaq_common.bus.transport import LIBZMQ, ZMTP
from stddaq_common.bus.zmtp_push import ZmtpPush
from stddaq_common.wire import zmtp
from tests.common.zmtp_hand import HandListener, connect_unix, read_exactly

DEADLINE_S = 30.0
"""Only catches hangs: every wait below ends on a count."""
WAIT_MS = int(DEADLINE_S * 1000)
Message = list[bytes]


@pytest.fixture
def path(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / f"cmd-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def messages(count: int) -> list[Message]:
    """Numbered messages of varying size (short and long frames), every 7th multipart
    (with an empty part)."""
    out: list[Message] = []
    for index in range(count):
        body = struct.pack(">Q", index) + bytes([index % 251]) * (index * 37 % 700)
        out.append([body, b"", b"tail" * (index % 90)] if index % 7 == 3 else [body])
    return out


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def take(pull: channel.CommandPull, count: int) -> list[Message]:
    got: list[Message] = []
    while len(got) < count:
        message = pull.receive(WAIT_MS)
        assert message is not None, f"the stream stopped after {len(got)} of {count} messages"
        got.append(message)
    return got


def ready_within_receives(pull: channel.CommandPull) -> None:
    assert isinstance(pull, OwnPull) and pull.reader is not None
    reader = pull.reader
    _until(lambda: pull.receive(1) is None and reader.ready, "the PULL's handshake")


def libzmq_push(context: zmq.Context[zmq.Socket[bytes]], path: str) -> zmq.Socket[bytes]:
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.setsockopt(zmq.SNDHWM, 0)
    push.bind(f"ipc://{path}")
    return push


def libzmq_pull(context: zmq.Context[zmq.Socket[bytes]], path: str) -> zmq.Socket[bytes]:
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.connect(f"ipc://{path}")
    return pull


def send_all(push: zmq.Socket[bytes], sent: list[Message]) -> None:
    for message in sent:
        push.send_multipart(message)


# ------------------------------------------------------------------ the writer's PULL


def test_a_pyzmq_push_reaches_the_own_pull_byte_equal_multipart_kept(
    path: str, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    push = libzmq_push(context, path)
    pull = connect_command_pull(context, f"ipc://{path}", 1000, transport=ZMTP)
    try:
        assert isinstance(pull, OwnPull) and pull.transport == ZMTP
        sent = messages(20_000)
        send_all(push, sent)
        assert take(pull, len(sent)) == sent
        assert pull.receive(0) is None
        assert pull.reader is not None
        assert (pull.reader.connects, pull.reader.protocol_errors) == (1, 0)
    finally:
        pull.close()
        push.close()


def test_the_own_pull_reconnects_to_a_restarted_push(
    path: str, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    pull = connect_command_pull(context, f"ipc://{path}", 1000, transport=ZMTP)
    try:
        assert pull.receive(0) is None  # no driver yet: nothing, no error
        for run in range(3):
            push = libzmq_push(context, path)
            ready_within_receives(pull)  # it connects again within its receive calls
            sent = [[f"run {run} message {k}".encode()] for k in range(500)]
            send_all(push, sent)
            assert take(pull, len(sent)) == sent
            push.close()
            Path(path).unlink()  # as a restarted driver replaces a stale socket file
        assert isinstance(pull, OwnPull) and pull.reader is not None
        assert pull.reader.connects == 3
    finally:
        pull.close()


class HandPush(HandListener):
    """A PUSH side written by hand on a Unix socket: exact bytes, exact splits."""

    def accept(self, pull: channel.CommandPull) -> socket.socket:
        """The PULL's next connection (it connects again within its receive calls)."""
        return self.accept_while(lambda: pull.receive(10), "the PULL")

    def handshake(self, pull: channel.CommandPull) -> None:
        """Accept, check the PULL's greeting and READY, answer with a 3.1 PUSH's."""
        conn = self.accept(pull)
        greeting = zmtp.parse_greeting(read_exactly(conn, zmtp.GREETING_BYTES))
        assert (greeting.major, greeting.minor, greeting.mechanism) == (3, 0, "NULL")
        ready = zmtp.encode_ready("PULL")
        assert read_exactly(conn, len(ready)) == ready
        conn.sendall(zmtp.greeting(minor=1) + zmtp.encode_ready("PUSH"))
        assert pull.receive(0) is None  # takes the READY


@pytest.fixture
def hand(path: str) -> Iterator[HandPush]:
    peer = HandPush(path)
    yield peer
    peer.close()


def test_a_message_split_at_every_octet_arrives_whole(
    path: str, hand: HandPush, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    wanted: list[Message] = [[b"s" * 40], [b"L" * 300], [b"a", b"b" * 300, b""]]
    wire = b"".join(zmtp.encode_message(message) for message in wanted)
    ends = []
    offset = 0
    for message in wanted:
        offset += len(zmtp.encode_message(message))
        ends.append(offset)
    pull = connect_command_pull(context, f"ipc://{path}", 1000, transport=ZMTP)
    try:
        hand.handshake(pull)
        for split in range(1, len(wire)):
            hand.send(wire[:split])
            whole = sum(1 for end in ends if end <= split)
            got = [pull.receive(0) for _ in range(whole)]
            assert got == wanted[:whole], f"split at octet {split}"
            assert pull.receive(0) is None, f"split at octet {split}"
            hand.send(wire[split:])
            assert take(pull, len(wanted) - whole) == wanted[whole:], f"split at octet {split}"
    finally:
        pull.close()


def test_a_ping_between_parts_is_answered_and_the_message_kept(
    path: str, hand: HandPush, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    pull = connect_command_pull(context, f"ipc://{path}", 1000, transport=ZMTP)
    try:
        hand.handshake(pull)
        wire = zmtp.encode_frame(b"one", more=True) + zmtp.encode_ping(0, b"ctx")
        wire += zmtp.encode_frame(b"two") + zmtp.encode_frame(b"next")
        got = []
        for octet in range(len(wire)):  # one octet per read: every state is crossed
            hand.send(wire[octet : octet + 1])
            message = pull.receive(0)
            if message is not None:
                got.append((octet, message))
        assert got == [(len(wire) - 7, [b"one", b"two"]), (len(wire) - 1, [b"next"])]
        assert hand.conn is not None
        pong = zmtp.encode_pong(b"ctx")
        assert read_exactly(hand.conn, len(pong)) == pong
    finally:
        pull.close()


def test_the_own_pull_drops_a_broken_push_counts_it_and_connects_again(
    path: str, hand: HandPush, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    pull = connect_command_pull(context, f"ipc://{path}", 1000, transport=ZMTP)
    try:
        assert isinstance(pull, OwnPull) and pull.reader is not None
        first = hand.accept(pull)
        first.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + bytes(64))  # not a ZMTP greeting
        assert pull.receive(0) is None
        assert pull.reader.protocol_errors == 1
        _until(lambda: first.recv(4096) == b"", "the broken connection to close")
        hand.handshake(pull)  # attempted again; a good peer is served
        hand.send(zmtp.encode_frame(b"after"))
        assert pull.receive(WAIT_MS) == [b"after"]
        # a command unknown here is ignored
        hand.send(zmtp.encode_command("UNKNOWN") + zmtp.encode_frame(b"still"))
        assert pull.receive(WAIT_MS) == [b"still"]
        assert pull.reader.protocol_errors == 1
    finally:
        pull.close()


def test_a_peer_that_is_not_a_push_is_refused(
    path: str, hand: HandPush, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    pull = connect_command_pull(context, f"ipc://{path}", 1000, transport=ZMTP)
    try:
        conn = hand.accept(pull)
        read_exactly(conn, zmtp.GREETING_BYTES + len(zmtp.encode_ready("PULL")))
        conn.sendall(zmtp.greeting(minor=1) + zmtp.encode_ready("PUB"))
        assert pull.receive(0) is None
        assert isinstance(pull, OwnPull) and pull.reader is not None
        assert pull.reader.protocol_errors == 1
    finally:
        pull.close()


def test_a_zmtp2_driver_makes_the_pull_fall_back_to_libzmq(
    path: str, hand: HandPush, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    pull = connect_command_pull(context, f"ipc://{path}", 1000, transport=ZMTP)
    try:
        conn = hand.accept(pull)
        conn.sendall(b"\xff" + bytes(7) + b"\x01\x7f" + b"\x01\x01")  # ZMTP 2.0: revision 1
        assert pull.receive(0) is None
        assert pull.transport == LIBZMQ
        # libzmq's PULL now connects by itself and sends its signature.
        again = hand.accept(pull)
        zmtp.check_signature(read_exactly(again, zmtp.SIGNATURE_BYTES))
    finally:
        pull.close()


# ------------------------------------------------------------------ the driver's PUSH


def test_the_own_push_reaches_a_pyzmq_pull_byte_equal_multipart_kept(
    path: str, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    push = ZmtpPush(path, sndhwm=100_000)
    pull = libzmq_pull(context, path)
    try:
        sent = messages(20_000)
        for message in sent:
            assert push.send(message, DEADLINE_S), "a connected PULL takes every message"
        got = [pull.recv_multipart() for _ in sent]
        assert got == sent
        assert pull.poll(0) == 0
        assert (push.sent, push.lost, push.protocol_errors, push.connects) == (len(sent), 0, 0, 1)
    finally:
        pull.close()
        push.close()


def test_the_own_push_deals_round_robin_to_several_pulls_each_message_once(
    path: str, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    push = ZmtpPush(path, sndhwm=100_000)
    pulls = [libzmq_pull(context, path) for _ in range(3)]
    try:
        _until(lambda: push.peers == 3, "three PULLs past the handshake")
        sent = messages(3000)
        for message in sent:
            assert push.send(message, DEADLINE_S)
        got: list[list[Message]] = [[pull.recv_multipart() for _ in range(1000)] for pull in pulls]
        assert all(pull.poll(0) == 0 for pull in pulls), "each gets exactly a third"
        numbers = sorted(struct.unpack_from(">Q", m[0])[0] for share in got for m in share)
        assert numbers == list(range(len(sent))), "every message once"
        for share in got:
            assert share == sorted(share, key=lambda m: m[0][:8]), "in order within a PULL"
            assert all(m == sent[struct.unpack_from(">Q", m[0])[0]] for m in share)
    finally:
        for pull in pulls:
            pull.close()
        push.close()


def test_the_own_push_and_pull_together_and_a_restarted_writer(path: str) -> None:
    push = ZmtpPush(path, sndhwm=100_000)
    try:
        for run in range(3):
            pull = connect_command_pull(zmq.Context.instance(), f"ipc://{path}", 1000, transport=ZMTP)
            sent = messages(2000)
            for message in sent:
                assert push.send(message, DEADLINE_S)
            assert take(pull, len(sent)) == sent
            pull.close()
            _until(lambda: push.peers == 0, f"writer {run}'s connection to be seen closed")
        assert push.send(b"nobody", 0.0) is False, "no writer: the send does not go"
        assert (push.connects, push.lost) == (3, 0)
    finally:
        push.close()


def raw_pull(path: str) -> socket.socket:
    """A PULL written by hand: greets, sends READY, reads the PUSH's greeting and READY."""
    sock = connect_unix(path)
    sock.sendall(zmtp.greeting(minor=1) + zmtp.encode_ready("PULL"))
    greeting = zmtp.parse_greeting(read_exactly(sock, zmtp.GREETING_BYTES))
    assert (greeting.major, greeting.minor) == (3, 0)
    ready = zmtp.encode_ready("PUSH")
    assert read_exactly(sock, len(ready)) == ready
    return sock


def test_a_pull_that_does_not_read_fills_the_queue_to_its_hwm_and_loses_nothing(path: str) -> None:
    hwm = 50
    push = ZmtpPush(path, sndhwm=hwm)
    peer = raw_pull(path)
    try:
        _until(lambda: push.peers == 1, "the PULL past the handshake")
        sent: list[bytes] = []
        while push.send(struct.pack(">Q", len(sent)) + bytes(1000), 0.0):
            sent.append(struct.pack(">Q", len(sent)) + bytes(1000))
            assert len(sent) < 10_000_000, "the queue never filled"
        assert len(sent) > hwm, "the socket buffer takes some, then the queue holds up to its HWM"
        blocked_until_room: list[bool] = []
        waiter = threading.Thread(
            target=lambda: blocked_until_room.append(push.send(b"late", DEADLINE_S))
        )
        waiter.start()
        expected = b"".join(zmtp.encode_frame(m) for m in sent) + zmtp.encode_frame(b"late")
        assert read_exactly(peer, len(expected)) == expected, "every accepted message, in order"
        waiter.join(DEADLINE_S)
        assert blocked_until_room == [True], "a send that waited goes once there is room"
        assert (push.lost, push.protocol_errors) == (0, 0)
    finally:
        peer.close()
        push.close()


def test_a_send_finds_no_room_within_its_timeout_and_nothing_goes(path: str) -> None:
    push = ZmtpPush(path, sndhwm=1)
    peer = raw_pull(path)
    try:
        _until(lambda: push.peers == 1, "the PULL past the handshake")
        accepted = 0
        while push.send(bytes(4000), 0.0):
            accepted += 1
        assert push.send(b"refused", 0.05) is False
        expected = zmtp.encode_frame(bytes(4000)) * accepted
        assert read_exactly(peer, len(expected)) == expected
        peer.settimeout(0.2)
        with pytest.raises(TimeoutError):
            peer.recv(1)  # the refused message never went out
        assert push.sent == accepted
    finally:
        peer.close()
        push.close()


def test_messages_queued_for_a_peer_that_closes_are_counted_lost(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    push = ZmtpPush(path, sndhwm=1000)
    peer = raw_pull(path)
    try:
        _until(lambda: push.peers == 1, "the PULL past the handshake")
        while push.send(bytes(4000), 0.0):
            pass
        peer.close()
        _until(lambda: push.peers == 0, "the closed peer to be noticed")
        assert push.lost == 1000, "the whole queue (the HWM) was for it"
        assert "not delivered" in caplog.text
    finally:
        push.close()


@pytest.mark.parametrize(
    ("opening", "reason"),
    [
        (b"GET / HTTP/1.1\r\n\r\n" + bytes(64), "not a ZMTP peer"),
        (zmtp.greeting(1) + zmtp.encode_ready("SUB"), "talks to PULL"),
        (zmtp.greeting(1, mechanism="PLAIN"), "PLAIN"),
        (b"\xff" + bytes(7) + b"\x01\x7f" + b"\x01\x01", "STDDAQ_COMMAND_TRANSPORT=libzmq"),
        (zmtp.greeting(1) + zmtp.encode_ready("PULL") + zmtp.encode_frame(b"m"), "sent a message"),
    ],
    ids=["http", "sub", "plain", "zmtp2", "pull-sends"],
)
def test_a_broken_peer_is_dropped_counted_and_the_push_serves_the_others(
    path: str,
    context: zmq.Context[zmq.Socket[bytes]],
    caplog: pytest.LogCaptureFixture,
    opening: bytes,
    reason: str,
) -> None:
    push = ZmtpPush(path, sndhwm=1000)
    bad = connect_unix(path)
    good = libzmq_pull(context, path)
    try:
        bad.sendall(opening)
        _until(lambda: push.protocol_errors == 1, "the broken peer to be counted")
        assert reason in caplog.text
        assert read_exactly(bad, 1) == b"\xff", "it got the PUSH's greeting"
        _until(lambda: bad.recv(4096) == b"", "the broken peer's connection to close")
        for k in range(100):
            assert push.send(k.to_bytes(2, "big"), DEADLINE_S)
        assert [good.recv() for _ in range(100)] == [k.to_bytes(2, "big") for k in range(100)]
        assert push.peers == 1
    finally:
        good.close()
        bad.close()
        push.close()


def test_the_handshake_split_at_every_octet(path: str) -> None:
    push = ZmtpPush(path, sndhwm=10)
    try:
        opening = zmtp.greeting(1) + zmtp.encode_ready("PULL", Identity=b"")
        peers = []
        for split in range(1, len(opening)):
            sock = connect_unix(path)
            sock.sendall(opening[:split])
            read_exactly(sock, zmtp.GREETING_BYTES + len(zmtp.encode_ready("PUSH")))
            assert push.send(b"early", 0.0) is (len(peers) > 0)
            sock.sendall(opening[split:])
            peers.append(sock)
            _until(lambda: push.peers == len(peers), f"the handshake split at octet {split}")
        assert push.protocol_errors == 0
        for sock in peers:
            sock.close()
    finally:
        push.close()


# ------------------------------------------------------------------ choosing the transport


def test_the_transport_is_chosen_by_argument_environment_and_address(
    tmp_path: Path, context: zmq.Context[zmq.Socket[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(channel.TRANSPORT_ENV, raising=False)
    made: list[channel.CommandPush | channel.CommandPull] = []
    try:
        own = f"ipc://{tmp_path}/own"
        made.append(bind_command_push(context, own, 10))
        assert isinstance(made[-1], ZmtpPush)
        made.append(connect_command_pull(context, own, 10))
        assert isinstance(made[-1], OwnPull)
        made.append(bind_command_push(context, f"ipc://{tmp_path}/own2", 10, transport=LIBZMQ))
        assert isinstance(made[-1], LibzmqPush)
        abstract = f"ipc://@stddaq-test-{uuid.uuid4().hex[:8]}"
        made.append(bind_command_push(context, abstract, 10))
        assert isinstance(made[-1], LibzmqPush)
        made.append(connect_command_pull(context, "tcp://127.0.0.1:5", 10))
        assert isinstance(made[-1], LibzmqPull)
        monkeypatch.setenv(channel.TRANSPORT_ENV, "libzmq")
        made.append(bind_command_push(context, f"ipc://{tmp_path}/env", 10))
        assert isinstance(made[-1], LibzmqPush)
        made.append(connect_command_pull(context, f"ipc://{tmp_path}/env", 10))
        assert isinstance(made[-1], LibzmqPull)
        pull = made[-1]
        push = made[-2]
        assert isinstance(push, LibzmqPush) and isinstance(pull, LibzmqPull)
        assert push.send(b"via libzmq", DEADLINE_S)
        assert pull.receive(WAIT_MS) == [b"via libzmq"]
        monkeypatch.setenv(channel.TRANSPORT_ENV, "nanomsg")
        with pytest.raises(ValueError, match="nanomsg"):
            bind_command_push(context, f"ipc://{tmp_path}/bad", 10)
    finally:
        for end in made:
            end.close()
