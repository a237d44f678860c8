"""The receiver's ZMTP reader against real peers: pyzmq PUSH sockets and raw TCP peers
that speak ZMTP 3.0/3.1 (or break it) byte by byte."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
import zmq

from stddaq_common.runtime.counters import Counter
from stddaq_common.wire import zmtp
from stddaq_common.wire.byte_views import BufferLike
from stddaq_receiver.zmtp_inputs import TAIL_SLACK, ZmtpInputs
from tests.receiver.conftest import free_tcp_address

DEADLINE_S = 60.0
"""Only catches hangs: every wait below ends on a count."""
MAX_PART = 64 * 1024 * 1024


@dataclass
class Sink:
    """Records what the reader hands over; the value part (index 2) goes into a buffer of its own."""

    value_index: int = 2
    messages: list[tuple[int, list[bytes]]] = field(default_factory=list)
    landed: list[bool] = field(default_factory=list)
    """Per message: whether its value part is the very buffer `place` gave."""
    aborts: list[str] = field(default_factory=list)
    _placed: dict[int, bytearray] = field(default_factory=dict)

    def place(self, source: int, heads: Sequence[BufferLike], nbytes: int, now: float) -> memoryview | None:
        assert len(heads) == self.value_index
        buffer = bytearray(nbytes)
        self._placed[source] = buffer
        return memoryview(buffer)

    def message(self, source: int, parts: Sequence[bytes | memoryview], now: float) -> None:
        placed = self._placed.pop(source, None)
        value = parts[self.value_index] if len(parts) > self.value_index else None
        self.landed.append(isinstance(value, memoryview) and value.obj is placed)
        self.messages.append((source, [bytes(part) for part in parts]))

    def abort(self, source: int, reason: str) -> None:
        self._placed.pop(source, None)
        self.aborts.append(reason)


def _reader(address: str, connections: int = 1) -> tuple[ZmtpInputs, Counter, Counter]:
    errors, reconnects = Counter("protocol_errors", ""), Counter("reconnects", "")
    inputs = ZmtpInputs(address, connections, max_part_bytes=MAX_PART, protocol_errors=errors,
                        reconnects=reconnects)
    return inputs, errors, reconnects


def _pump(inputs: ZmtpInputs, sink: Sink, until: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not until():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        ready = inputs.ready(20)
        inputs.receive(ready, time.monotonic(), sink)


def _message(index: int, value_size: int) -> list[bytes]:
    value = bytes((index + k) % 251 for k in range(min(value_size, 1000))) * (value_size // 1000 + 1)
    return [f"main {index}".encode(), b"data header", value[:value_size], index.to_bytes(16, "little")]


def _send_all(push: zmq.Socket[bytes], messages: list[list[bytes]], inputs: ZmtpInputs, sink: Sink) -> None:
    """Send every message (non-blocking, pumping the reader while the PUSH is full)."""
    deadline = time.monotonic() + DEADLINE_S
    for parts in messages:
        while True:
            try:
                push.send_multipart(parts, zmq.NOBLOCK)
                break
            except zmq.Again:
                assert time.monotonic() < deadline, "the PUSH never took the message"
                inputs.receive(inputs.ready(5), time.monotonic(), sink)


@pytest.fixture
def context() -> zmq.Context[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx  # type: ignore[misc]
    ctx.destroy(linger=0)


SIZES = (0, 1, 255, 256, 4095, 70_000, 300_000, 2 * 1024 * 1024 + 3)


def test_pyzmq_push_messages_arrive_whole_in_order_values_in_place(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    push = context.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    inputs, errors, _ = _reader(f"tcp://127.0.0.1:{port}")
    sink = Sink()
    messages = [_message(i, SIZES[i % len(SIZES)]) for i in range(120)]
    messages += [[b"one part only"], [b"two", b"parts"]]
    try:
        _send_all(push, messages, inputs, sink)
        _pump(inputs, sink, lambda: len(sink.messages) == len(messages), "every message")
    finally:
        inputs.close()
        push.close(linger=0)
    assert [parts for _, parts in sink.messages] == messages
    assert sink.landed == [True] * 120 + [False, False]
    assert errors.value == 0 and sink.aborts == []


def test_four_connections_to_one_push_deliver_every_message_once(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    push = context.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    inputs, _, _ = _reader(f"tcp://127.0.0.1:{port}", 4)
    sink = Sink()
    # wait for the 4 connections before sending, so that PUSH deals over all of them
    _pump(inputs, sink, lambda: inputs.connected == 4, "4 connections")
    messages = [_message(i, 70_000 if i % 3 else 10) for i in range(400)]
    try:
        _send_all(push, messages, inputs, sink)
        _pump(inputs, sink, lambda: len(sink.messages) == len(messages), "every message")
    finally:
        inputs.close()
        push.close(linger=0)
    ids = sorted(int.from_bytes(parts[3], "little") for _, parts in sink.messages)
    assert ids == list(range(400))
    assert {source for source, _ in sink.messages} == {0, 1, 2, 3}
    for source in range(4):  # each connection delivers in the PUSH's order
        mine = [int.from_bytes(parts[3], "little") for s, parts in sink.messages if s == source]
        assert mine == sorted(mine)


def test_a_steady_stream_waits_for_whole_messages_and_a_smaller_one_still_arrives(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """Same-size large messages raise the connection's low-water mark to about a whole
    message (one wake-up each); a smaller message after them is found anyway (looked at
    once the connection stalls) and every message arrives whole, in order."""
    push = context.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    inputs, errors, _ = _reader(f"tcp://127.0.0.1:{port}")
    sink = Sink()
    big = 2 * 1024 * 1024
    steady = [_message(i, big) for i in range(4)]
    after = [_message(4, 10), _message(5, big), _message(6, big), [b"one part only"], _message(8, 300_000)]
    try:
        _send_all(push, steady, inputs, sink)
        _pump(inputs, sink, lambda: len(sink.messages) == len(steady), "the steady messages")
        assert inputs._conns[0].lowat > big // 2  # waiting for about a whole message
        _send_all(push, after, inputs, sink)
        _pump(inputs, sink, lambda: len(sink.messages) == len(steady) + len(after), "every message")
    finally:
        inputs.close()
        push.close(linger=0)
    assert [parts for _, parts in sink.messages] == steady + after
    assert sink.landed == [True] * 7 + [False, True]
    assert errors.value == 0 and sink.aborts == []


def _wire_size(parts: list[bytes]) -> int:
    short, long = zmtp.SHORT_HEADER_BYTES, zmtp.LONG_HEADER_BYTES
    return sum(len(part) + (short if len(part) <= zmtp.MAX_SHORT_BODY else long) for part in parts)


def test_a_steady_stream_of_equal_messages_waits_for_all_of_the_next_but_a_few_octets(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """Messages whose sizes differ only by a main header's digits set the mark at the last
    one's wire size less TAIL_SLACK (woken only with the trailing timestamp frame in); a
    message some octets shorter or longer still arrives whole, in order."""
    push = context.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    inputs, errors, _ = _reader(f"tcp://127.0.0.1:{port}")
    sink = Sink()
    big = 2 * 1024 * 1024
    steady = [_message(i, big) for i in range(10, 14)]
    shorter = _message(7, big)  # "main 7": one octet shorter than "main 13"
    longer = _message(123456, big)
    try:
        _send_all(push, steady, inputs, sink)
        _pump(inputs, sink, lambda: len(sink.messages) == len(steady), "the steady messages")
        assert inputs._conns[0].lowat == _wire_size(steady[-1]) - TAIL_SLACK
        _send_all(push, [shorter, longer, shorter], inputs, sink)
        _pump(inputs, sink, lambda: len(sink.messages) == len(steady) + 3, "every message")
    finally:
        inputs.close()
        push.close(linger=0)
    assert [parts for _, parts in sink.messages] == [*steady, shorter, longer, shorter]
    assert sink.landed == [True] * 7
    assert errors.value == 0 and sink.aborts == []


class RawPeer:
    """A listening TCP peer speaking ZMTP by hand: `script(conn, index)` runs per accepted
    connection after the greeting and READY exchange, in a thread."""

    def __init__(self, script: Callable[[socket.socket, int], None], minor: int = 1,
                 socket_type: str = "PUSH", connections: int = 1) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(DEADLINE_S)
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received_greetings: list[zmtp.Greeting] = []
        self.errors: list[BaseException] = []
        self._script = script
        self._minor = minor
        self._type = socket_type
        self._thread = threading.Thread(target=self._serve, args=(connections,), daemon=True)
        self._thread.start()

    def _serve(self, connections: int) -> None:
        try:
            for index in range(connections):
                conn, _ = self.listener.accept()
                conn.settimeout(DEADLINE_S)
                with conn:
                    conn.sendall(zmtp.greeting(self._minor) + zmtp.encode_ready(self._type))
                    self.received_greetings.append(zmtp.parse_greeting(read_exactly(conn, 64)))
                    read_frame(conn)  # the reader's READY
                    self._script(conn, index)
        except BaseException as error:  # reported by join()
            self.errors.append(error)

    def join(self) -> None:
        self._thread.join(DEADLINE_S)
        self.listener.close()
        assert not self.errors, self.errors


def read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_frame(conn: socket.socket) -> tuple[int, bytes]:
    first = read_exactly(conn, 2)
    header = first + (read_exactly(conn, 7) if first[0] & zmtp.LONG else b"")
    flags, size, _ = zmtp.parse_frame_header(header) or (0, 0, 0)
    return flags, read_exactly(conn, size)


def _wait_closed(conn: socket.socket) -> None:
    """Block until the reader closes the connection (it dropped it)."""
    while conn.recv(65536):
        pass


@pytest.mark.parametrize("minor", [0, 1], ids=["zmtp-3.0", "zmtp-3.1"])
def test_ping_is_answered_for_3_1_and_unknown_commands_are_ignored(minor: int) -> None:
    pongs: list[bytes] = []

    def script(conn: socket.socket, _: int) -> None:
        conn.sendall(zmtp.encode_command("HELLO", b"whatever") + zmtp.encode_ping(10, b"ctx-1")
                     + zmtp.encode_message(_message(7, 300_000)))
        if minor >= 1:
            flags, body = read_frame(conn)
            assert flags == zmtp.COMMAND
            name, data = zmtp.parse_command(body)
            pongs.append(name.encode() + b" " + bytes(data))
        _wait_closed(conn)

    peer = RawPeer(script, minor=minor)
    inputs, errors, _ = _reader(peer.address)
    sink = Sink()
    try:
        _pump(inputs, sink, lambda: len(sink.messages) == 1, "the message")
    finally:
        inputs.close()
    peer.join()
    assert sink.messages[0][1] == _message(7, 300_000)
    assert sink.landed == [True]
    assert pongs == ([b"PONG ctx-1"] if minor >= 1 else [])
    assert errors.value == 0
    assert peer.received_greetings[0].minor == 1


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"\x08\x00", "frame flags 0x08 set reserved bits"),
        (zmtp.frame_header(3) + b"abc", "not 1..255 letters"),  # a message part is fine ...
        (zmtp.encode_command("ERROR", b"\x04gone"), "ERROR 'gone'"),
        (b"\x06" + (2**40).to_bytes(8, "big"), "command frame of 1099511627776 octets"),
        (b"\x02" + (2**40).to_bytes(8, "big"), "message part of 1099511627776 octets"),
    ],
    ids=["reserved-flags", "bad-command", "error-command", "huge-command", "huge-part"],
)
def test_a_malformed_frame_is_counted_logged_and_the_connection_made_again(
    bad: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    if bad.startswith(zmtp.frame_header(3)):
        bad = zmtp.encode_frame(b"\x00xyz", command=True)  # ... a command without a name is not

    def script(conn: socket.socket, index: int) -> None:
        if index == 0:
            conn.sendall(zmtp.encode_message(_message(1, 1000)) + zmtp.frame_header(5, more=True) + b"main2"
                         + bad)
        else:
            conn.sendall(zmtp.encode_message(_message(3, 300_000)))
        _wait_closed(conn)

    peer = RawPeer(script, connections=2)
    inputs, errors, reconnects = _reader(peer.address)
    sink = Sink()
    caplog.set_level(logging.INFO, "stddaq.receiver")
    try:
        _pump(inputs, sink, lambda: len(sink.messages) == 2, "a message from each connection")
    finally:
        inputs.close()
    peer.join()
    assert [parts for _, parts in sink.messages] == [_message(1, 1000), _message(3, 300_000)]
    assert (errors.value, reconnects.value) == (1, 1)
    assert sink.aborts and "broke mid-message" in sink.aborts[0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"connection 0 to {peer.address} (peer 127.0.0.1:" in warnings[0]
    assert reason in warnings[0] and "connecting again" in warnings[0]


def test_a_peer_gone_mid_value_aborts_that_message_and_the_next_connection_delivers() -> None:
    def script(conn: socket.socket, index: int) -> None:
        if index == 0:
            whole = zmtp.encode_message(_message(5, 2_000_000))
            conn.sendall(whole[: len(whole) // 2])
            return  # closes the connection mid-value
        conn.sendall(zmtp.encode_message(_message(6, 2_000_000)))
        _wait_closed(conn)

    peer = RawPeer(script, connections=2)
    inputs, errors, reconnects = _reader(peer.address)
    sink = Sink()
    try:
        _pump(inputs, sink, lambda: len(sink.messages) == 1, "the second connection's message")
    finally:
        inputs.close()
    peer.join()
    assert sink.messages[0][1] == _message(6, 2_000_000) and sink.landed == [True]
    assert len(sink.aborts) == 1 and "closed the connection" in sink.aborts[0]
    assert (errors.value, reconnects.value) == (0, 1)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (zmtp.greeting(1) + zmtp.encode_ready("PUB"), "'PUB' socket; a PULL socket talks to PUSH"),
        (b"HTTP/1.1 200 OK\r\n\r\n" + bytes(64), "not a ZMTP peer"),
        (b"\xff" + bytes(8) + b"\x7f\x01\x08\x00\x00", "ZMTP 2.0 or older"),
        (zmtp.greeting(1, "PLAIN"), "PLAIN security mechanism, not NULL"),
        (zmtp.greeting(1) + zmtp.encode_frame(b"hello"), "message before its READY"),
    ],
    ids=["pub-peer", "http-peer", "zmtp-2.0-peer", "plain-mechanism", "message-before-ready"],
)
def test_a_peer_that_is_no_zmtp_3_push_is_refused_with_the_reason(
    reply: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused as soon as the bytes say so (a ZMTP 2.0 peer waits for our reply to its 14
    octets: the reader must not wait for 64)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(DEADLINE_S)
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    inputs, errors, _ = _reader(address)
    sink = Sink()
    caplog.set_level(logging.WARNING, "stddaq.receiver")
    try:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(reply)
            _pump(inputs, sink, lambda: errors.value == 1, "the protocol error")
    finally:
        inputs.close()
        listener.close()
    assert reason in caplog.records[-1].getMessage()
    assert sink.messages == []


def test_a_paused_connection_is_not_read_and_the_push_waits(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """Back-pressure: while paused, nothing is read, so TCP and the PUSH's queue fill and
    the PUSH refuses more; once resumed every message arrives, in order."""
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 2)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    inputs, _, _ = _reader(f"tcp://127.0.0.1:{port}")
    sink = Sink()
    _pump(inputs, sink, lambda: inputs.connected == 1, "the connection")
    inputs.pause(frozenset({0}))
    sent = 0
    refusals = 0
    try:
        while refusals < 100:  # the PUSH refused 100 times in a row: it is full
            try:
                push.send_multipart(_message(sent, 1_000_000), zmq.NOBLOCK)
                sent += 1
                refusals = 0
                assert sent < 500, "the PUSH never filled: the paused connection is being read"
            except zmq.Again:
                refusals += 1
                inputs.receive(inputs.ready(10), time.monotonic(), sink)
        assert sink.messages == []
        inputs.pause(frozenset())
        _pump(inputs, sink, lambda: len(sink.messages) == sent, "the queued messages")
    finally:
        inputs.close()
        push.close(linger=0)
    assert [int.from_bytes(parts[3], "little") for _, parts in sink.messages] == list(range(sent))


def test_the_reader_connects_once_the_camera_is_up(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    address = free_tcp_address()
    inputs, _, reconnects = _reader(address, 2)
    sink = Sink()
    try:
        for _ in range(20):  # refused a few times (back-off), nothing delivered
            inputs.receive(inputs.ready(10), time.monotonic(), sink)
        push = context.socket(zmq.PUSH)
        push.bind(address)
        _pump(inputs, sink, lambda: inputs.connected == 2, "both connections")
        _send_all(push, [_message(i, 100_000) for i in range(10)], inputs, sink)
        _pump(inputs, sink, lambda: len(sink.messages) == 10, "the messages")
        push.close(linger=0)
        # the camera restarts on the same address: the reader connects again
        _pump(inputs, sink, lambda: reconnects.value == 2, "both connections lost")
        push = context.socket(zmq.PUSH)
        push.bind(address)
        _pump(inputs, sink, lambda: inputs.connected == 2, "both connections again")
        _send_all(push, [_message(i, 100_000) for i in range(10, 20)], inputs, sink)
        _pump(inputs, sink, lambda: len(sink.messages) == 20, "the messages after the restart")
        push.close(linger=0)
    finally:
        inputs.close()
    ids = sorted(int.from_bytes(parts[3], "little") for _, parts in sink.messages)
    assert ids == list(range(20))
