"""The receiver's gathering pause after a round that received messages: its bound (the
low-water marks that end it) and, against a real pyzmq PUSH, that it ends on what arrives,
is skipped while anything is pending, and loses or reorders nothing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import zmq

from stddaq_receiver.zmtp_inputs import GATHER_FILL, STEADY_MARGIN, ZmtpInputs, gather_mark
from tests.receiver.test_zmtp_inputs import (
    DEADLINE_S,
    MAX_PART,
    Sink,
    _message,
    _pump,
    _send_all,
)

MIB = 1024 * 1024


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def test_the_mark_is_half_the_receive_buffer() -> None:
    # A connection with a 16 MiB buffer waiting for 2 MiB messages: the pause ends at 8 MiB.
    assert gather_mark(16 * MIB, 2 * MIB - 10, 2 * MIB) == int(16 * MIB * GATHER_FILL)


def test_one_more_whole_message_never_ends_the_pause() -> None:
    # A tight buffer (the kernel sized it for one message): the mark is above one message.
    mark = gather_mark(3 * MIB, 2 * MIB - 10, 2 * MIB)
    assert mark == 2 * MIB + STEADY_MARGIN
    assert gather_mark(64 * MIB, 1, 8192) == 32 * MIB  # small messages: half the buffer
    assert gather_mark(4096, 1, 8192) == 8192 + STEADY_MARGIN


def test_a_buffer_that_could_not_be_read_allows_no_pause() -> None:
    assert gather_mark(0, 1, 2 * MIB) == 0


def _inputs(port: int) -> ZmtpInputs:
    return ZmtpInputs(f"tcp://127.0.0.1:{port}", 1, max_part_bytes=MAX_PART)


def test_a_pause_ends_once_a_connection_holds_its_mark_and_loses_nothing(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """During a pause (seen as the raised mark) messages far beyond the mark are queued; the
    pause, which could last DEADLINE_S, ends on them (the deadline only catches a hang), puts
    the connection's mark back, and every message then arrives whole and in order."""
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 1000)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    inputs = _inputs(port)
    sink = Sink()
    size = 1 * MIB
    steady = [_message(i, size) for i in range(3)]
    try:
        _send_all(push, steady, inputs, sink)
        _pump(inputs, sink, lambda: len(sink.messages) == len(steady), "the steady messages")
        conn = inputs._conns[0]
        mark = gather_mark(conn.rcvbuf, conn.lowat, conn.last_size)
        assert mark > conn.lowat  # a pause is allowed: all up, nothing in hand
        assert conn.sock is not None
        sock = conn.sock
        pausing = threading.Thread(target=inputs.gather, args=(DEADLINE_S,))
        pausing.start()
        # The pause is on: the connection's mark is raised to its gathering mark.
        deadline = time.monotonic() + DEADLINE_S
        while sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) != mark:
            assert time.monotonic() < deadline, "no pause (the mark was never raised)"
            time.sleep(0.001)
        assert pausing.is_alive()
        # Queue more than the mark (and more than the kernel buffer holds) in the PUSH.
        burst = [_message(i, size) for i in range(3, 3 + 2 * (conn.rcvbuf // size) + 8)]
        for parts in burst:
            push.send_multipart(parts)  # the PUSH's pipe holds what the kernel does not
        pausing.join(DEADLINE_S / 2)
        assert not pausing.is_alive(), "the pause did not end on the data"
        assert len(sink.messages) == len(steady)  # a pause reads nothing
        assert conn.sock is not None  # the mark between messages is back on the socket
        assert conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == conn.lowat
        _pump(inputs, sink, lambda: len(sink.messages) == len(steady) + len(burst), "every message")
    finally:
        inputs.close()
        push.close(linger=0)
    assert [parts for _, parts in sink.messages] == steady + burst
    assert sink.aborts == []


def test_no_pause_before_the_handshake_or_with_a_message_in_hand(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """gather returns at once (a pause would last DEADLINE_S) while a connection is not up,
    and while part of a message is in hand; the message then arrives whole."""
    push = context.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    inputs = _inputs(port)
    sink = Sink()
    try:
        started = time.monotonic()
        inputs.gather(DEADLINE_S)  # connecting: no pause
        assert time.monotonic() - started < DEADLINE_S / 2
        _pump(inputs, sink, lambda: inputs.connected == 1, "the connection")
        message = _message(0, 3 * MIB)
        push.send_multipart(message)
        # Receive until the large value is in hand but not whole (or the message is whole).
        _pump(inputs, sink, lambda: bool(sink.messages) or inputs._conns[0].body is not None,
              "part of the message")
        if not sink.messages:
            started = time.monotonic()
            inputs.gather(DEADLINE_S)  # a message in hand: no pause
            assert time.monotonic() - started < DEADLINE_S / 2
        _pump(inputs, sink, lambda: len(sink.messages) == 1, "the message")
    finally:
        inputs.close()
        push.close(linger=0)
    assert [parts for _, parts in sink.messages] == [message]
