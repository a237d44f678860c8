"""ZMTP 3 framing (stddaq_common.wire.zmtp): bytes as the spec and libzmq put them on the wire."""

from __future__ import annotations

import socket
import struct
import time

import pytest
import zmq

from stddaq_common.wire import zmtp


def test_greeting_is_64_octets_and_reads_back() -> None:
    raw = zmtp.greeting(1)
    assert len(raw) == zmtp.GREETING_BYTES
    assert raw[0] == 0xFF and raw[9] == 0x7F and raw[10:12] == b"\x03\x01"
    assert raw[12:32] == b"NULL" + bytes(16)
    assert raw[32:] == bytes(32)
    assert zmtp.parse_greeting(raw) == zmtp.Greeting(3, 1, "NULL", False)
    assert zmtp.parse_greeting(zmtp.greeting(0)).minor == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"GET / HTTP/1.1\r\n" + bytes(48), "not a ZMTP peer"),
        (b"\xff" + bytes(8) + b"\x7f\x01\x00" + bytes(52), "ZMTP 2.0 or older"),
        (b"\xff" + bytes(8) + b"\x7f\x03\x01" + b"nul!" + bytes(48), "mechanism"),
        (b"\xff" + bytes(8) + b"\x7f\x03\x01" + bytes(52), "mechanism"),
        (b"\xff" + bytes(8) + b"\x7f\x03\x01NULL" + bytes(16) + b"\x07" + bytes(31), "as-server"),
        (zmtp.greeting(1)[:40], "64 octets"),
    ],
    ids=["http", "zmtp2", "bad-mechanism", "empty-mechanism", "as-server", "short"],
)
def test_bad_greetings_say_what_is_wrong(raw: bytes, reason: str) -> None:
    with pytest.raises(zmtp.ZmtpError, match=reason):
        zmtp.parse_greeting(raw)


def test_an_old_peer_is_refused_from_its_first_11_octets() -> None:
    zmtp.check_signature(zmtp.greeting(1)[:10])
    zmtp.check_signature(zmtp.greeting(0)[:11])
    with pytest.raises(zmtp.ZmtpError, match=r"revision 1: ZMTP 2\.0 or older"):
        zmtp.check_signature(b"\xff" + bytes(8) + b"\x7f\x01\x05")  # ZMTP 2.0: revision, PUSH


def test_a_later_version_is_accepted() -> None:
    raw = bytearray(zmtp.greeting(1))
    raw[10:12] = b"\x04\x07"
    assert zmtp.parse_greeting(bytes(raw)).major == 4


@pytest.mark.parametrize("size", [0, 1, 255, 256, 70_000, 2**40])
def test_frame_headers_short_and_long(size: int) -> None:
    header = zmtp.frame_header(size, more=True)
    assert len(header) == (2 if size <= 255 else 9)
    flags, got, header_bytes = zmtp.parse_frame_header(header + b"xyz") or (0, 0, 0)
    assert (got, header_bytes) == (size, len(header))
    assert flags & zmtp.MORE and not flags & zmtp.COMMAND
    assert bool(flags & zmtp.LONG) == (size > 255)


def test_incomplete_frame_headers_are_none_and_offsets_count() -> None:
    long_header = zmtp.frame_header(1000)
    for cut in range(len(long_header)):
        assert zmtp.parse_frame_header(long_header[:cut]) is None
    data = b"junk" + long_header
    assert zmtp.parse_frame_header(data, 4) == (zmtp.LONG, 1000, 9)
    assert zmtp.parse_frame_header(data, 4, 8) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"\x08\x00", "reserved"), (b"\x80\x00", "reserved"), (b"\x05\x00", "MORE")],
    ids=["bit3", "bit7", "command-with-more"],
)
def test_bad_flags_are_errors(raw: bytes, reason: str) -> None:
    with pytest.raises(zmtp.ZmtpError, match=reason):
        zmtp.parse_frame_header(raw)


def test_commands_ready_properties_round_trip() -> None:
    frame = zmtp.encode_ready("PULL", Identity=b"")
    flags, size, header_bytes = zmtp.parse_frame_header(frame) or (0, 0, 0)
    assert flags == zmtp.COMMAND and header_bytes + size == len(frame)
    name, data = zmtp.parse_command(frame[header_bytes:])
    assert name == "READY"
    assert bytes(data) == b"\x0bSocket-Type\x00\x00\x00\x04PULL\x08Identity\x00\x00\x00\x00"
    properties = zmtp.parse_properties(data)
    assert properties == {"socket-type": b"PULL", "identity": b""}
    assert zmtp.peer_socket_type({"socket-type": b"PUSH"}, "PULL") == "PUSH"
    with pytest.raises(zmtp.ZmtpError, match="'PUB' socket; a PULL socket talks to PUSH"):
        zmtp.peer_socket_type({"socket-type": b"PUB"}, "PULL")
    with pytest.raises(zmtp.ZmtpError, match="no Socket-Type"):
        zmtp.peer_socket_type({}, "PULL")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00", "name"),
        (b"\x05Sock", "name"),
        (b"\x04Type\x00\x00", "4-octet value size"),
        (b"\x04Type\x00\x00\x00\x09PUSH", "says 9 octets, 4 remain"),
        (b"\x04Ty e\x00\x00\x00\x00", "name"),
    ],
    ids=["empty-name", "cut-name", "cut-size", "value-too-long", "space-in-name"],
)
def test_bad_properties_are_errors(data: bytes, reason: str) -> None:
    with pytest.raises(zmtp.ZmtpError, match=reason):
        zmtp.parse_properties(data)


def test_bad_command_names_are_errors() -> None:
    for body in (b"", b"\x00", b"\x05REA", b"\x04PI G"):
        with pytest.raises(zmtp.ZmtpError):
            zmtp.parse_command(body)


def test_ping_pong_and_error() -> None:
    ping = zmtp.encode_ping(25, b"ctx")
    name, data = zmtp.parse_command(ping[2:])
    assert name == "PING" and zmtp.parse_ping(data) == (25, b"ctx")
    assert zmtp.encode_pong(b"ctx") == b"\x04\x08\x04PONGctx"
    with pytest.raises(zmtp.ZmtpError, match="PING data"):
        zmtp.parse_ping(b"\x00")
    with pytest.raises(zmtp.ZmtpError, match="PING data"):
        zmtp.parse_ping(bytes(19))
    name, data = zmtp.parse_command(zmtp.encode_error("no")[2:])
    assert name == "ERROR" and zmtp.parse_error(data) == "no"


def test_a_message_encodes_with_more_on_all_but_the_last() -> None:
    raw = zmtp.encode_message([b"a", b"", bytes(300)])
    assert raw[:3] == b"\x01\x01a"
    assert raw[3:5] == b"\x01\x00"
    assert raw[5:14] == b"\x02" + struct.pack(">Q", 300)
    assert len(raw) == 14 + 300


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "libzmq closed the connection"
        data += chunk
    return data


def test_the_codec_reads_what_libzmq_sends() -> None:
    """A raw TCP client against a pyzmq PUSH: its greeting, READY and frames parse as sent."""
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    try:
        port = push.bind_to_random_port("tcp://127.0.0.1")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(zmtp.greeting(1) + zmtp.encode_ready("PULL"))
            greeting = zmtp.parse_greeting(_read(sock, 64))
            assert (greeting.major, greeting.mechanism) == (3, "NULL")
            header = _read(sock, 2)
            flags, size, _ = zmtp.parse_frame_header(header) or (0, 0, 0)
            assert flags == zmtp.COMMAND
            name, data = zmtp.parse_command(_read(sock, size))
            assert name == "READY"
            assert zmtp.peer_socket_type(zmtp.parse_properties(data), "PULL") == "PUSH"
            parts = [b"head", b"", bytes(range(256)) * 1000]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    push.send_multipart(parts, zmq.NOBLOCK)
                    break
                except zmq.Again:  # the connection is not ready in libzmq yet
                    time.sleep(0.01)
            received = []
            while True:
                first = _read(sock, 2)
                header = first + (_read(sock, 7) if first[0] & zmtp.LONG else b"")
                flags, size, _ = zmtp.parse_frame_header(header) or (0, 0, 0)
                received.append(_read(sock, size))
                if not flags & zmtp.MORE:
                    break
            assert received == parts
    finally:
        push.close(linger=0)
        context.term()
