"""ZMTP 3.x, ZeroMQ's wire protocol (23/ZMTP 3.0, 37/ZMTP 3.1): bytes <-> greeting, frames, commands.

No sockets here: a reader (services/receiver) feeds bytes in and writes what these
functions build. What a connection looks like on the wire:

    greeting  64 octets: %xFF, 8 padding octets, %x7F, version major (3), minor (0 or 1),
              mechanism (20 octets, "NULL" zero-padded), as-server (0), 31 zero octets
    handshake (NULL mechanism) each peer sends a READY command with its properties
              (Socket-Type, ...), or ERROR with a reason
    traffic   frames: flags (MORE 1, LONG 2, COMMAND 4; bits 7-3 zero), size (1 octet, or
              8 octets big-endian if LONG), body. A message is frames with MORE set on all
              but the last. A command is one frame: name (1 octet length + letters), data.
              3.1 adds PING (ttl: 2 octets in 1/10 s, context: 0-16 octets) -> PONG (context).

Every malformed input raises ZmtpError with a reason naming what was wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from stddaq_common.wire.byte_views import BufferLike, byte_view

GREETING_BYTES: Final = 64
SIGNATURE_BYTES: Final = 10
MECHANISM_BYTES: Final = 20
MORE: Final = 0x01
LONG: Final = 0x02
COMMAND: Final = 0x04
RESERVED_FLAGS: Final = 0xF8
SHORT_HEADER_BYTES: Final = 2
LONG_HEADER_BYTES: Final = 9
MAX_SHORT_BODY: Final = 255
MAX_BODY: Final = 2**63 - 1
MAX_PING_CONTEXT: Final = 16
NULL_MECHANISM: Final = "NULL"

PEER_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    "PULL": ("PUSH",),
    "PUSH": ("PULL",),
    "SUB": ("PUB", "XPUB"),
    "XSUB": ("PUB", "XPUB"),
    "PUB": ("SUB", "XSUB"),
    "XPUB": ("SUB", "XSUB"),
    "PAIR": ("PAIR",),
}
"""The socket types (Socket-Type property) each socket type may talk to."""

_LONG_SIZE = struct.Struct(">Q")
_LONG_FRAME_HEADER = struct.Struct(">BQ")
_VALUE_SIZE = struct.Struct(">I")
_TTL = struct.Struct(">H")
_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+")


class ZmtpError(ValueError):
    """Bytes that do not follow ZMTP 3 (or a peer this side cannot talk to); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Greeting:
    """A peer's greeting."""

    major: int
    minor: int
    mechanism: str
    as_server: bool


def greeting(minor: int = 1, mechanism: str = NULL_MECHANISM, as_server: bool = False) -> bytes:
    """The 64-octet greeting of a ZMTP 3.`minor` peer."""
    name = mechanism.encode("ascii")
    if not 0 < len(name) <= MECHANISM_BYTES:
        raise ValueError(f"mechanism {mechanism!r} must be 1..{MECHANISM_BYTES} characters")
    return (
        b"\xff" + bytes(8) + b"\x7f" + bytes((3, minor)) + name.ljust(MECHANISM_BYTES, b"\x00")
        + bytes((int(as_server),)) + bytes(31)
    )


def check_signature(data: BufferLike) -> None:
    """ZmtpError unless the first 10 octets are a ZMTP signature (%xFF, 8 any, %x7F) and,
    once an 11th octet is there, the major version is 3 or later (what a peer may check
    before the rest of the greeting, as the version negotiation allows)."""
    view = byte_view(data, "greeting")
    if len(view) < SIGNATURE_BYTES:
        raise ZmtpError(f"greeting signature needs {SIGNATURE_BYTES} octets, got {len(view)}")
    if view[0] != 0xFF or (view[9] & 0x01) == 0:
        raise ZmtpError(
            f"not a ZMTP peer: the first octets are {bytes(view[:SIGNATURE_BYTES]).hex()}, "
            "a ZeroMQ greeting starts with ff .. 7f"
        )
    if len(view) > SIGNATURE_BYTES:
        _check_major(view[SIGNATURE_BYTES])


def _check_major(major: int) -> None:
    if major < 3:
        raise ZmtpError(
            f"peer's greeting has revision {major}: ZMTP 2.0 or older (ZeroMQ 3.x or older); "
            "only ZMTP 3.0 or later is spoken"
        )


def parse_greeting(data: BufferLike) -> Greeting:
    """The peer's 64-octet greeting; ZmtpError if it is not one of ZMTP 3 or later."""
    view = byte_view(data, "greeting")
    check_signature(view)
    if len(view) != GREETING_BYTES:
        raise ZmtpError(f"a ZMTP 3 greeting has {GREETING_BYTES} octets, got {len(view)}")
    major, minor = view[10], view[11]
    _check_major(major)
    raw_mechanism = bytes(view[12 : 12 + MECHANISM_BYTES])
    name = raw_mechanism.rstrip(b"\x00")
    if not name or b"\x00" in name or any(c not in _NAME_CHARS for c in name):
        raise ZmtpError(f"greeting mechanism {raw_mechanism!r} is not a zero-padded name")
    as_server = view[32]
    if as_server > 1:
        raise ZmtpError(f"greeting as-server octet is {as_server}, not 0 or 1")
    return Greeting(major, minor, name.decode("ascii"), bool(as_server))


def frame_header(size: int, *, more: bool = False, command: bool = False) -> bytes:
    """The flags and size octets of a frame with a `size`-octet body."""
    if not 0 <= size <= MAX_BODY:
        raise ValueError(f"frame size {size} is outside 0..2**63-1")
    flags = (MORE if more else 0) | (COMMAND if command else 0)
    if size <= MAX_SHORT_BODY:
        return bytes((flags, size))
    return bytes((flags | LONG,)) + _LONG_SIZE.pack(size)


def encode_frame(body: BufferLike, *, more: bool = False, command: bool = False) -> bytes:
    """One whole frame (header and body)."""
    view = byte_view(body, "frame body")
    return frame_header(len(view), more=more, command=command) + bytes(view)


def single_frame(body: bytes) -> bytes:
    """The frame of a one-part message whose body is `body` (the per-message path of the
    own PUB and PUSH: no checks beyond the size, which bytes cannot exceed)."""
    size = len(body)
    if size <= MAX_SHORT_BODY:
        return bytes((0, size)) + body
    return _LONG_FRAME_HEADER.pack(LONG, size) + body


def encode_message(parts: list[bytes]) -> bytes:
    """A multipart message as frames (MORE on all but the last)."""
    last = len(parts) - 1
    return b"".join(encode_frame(part, more=index < last) for index, part in enumerate(parts))


def parse_frame_header(
    data: BufferLike, offset: int = 0, end: int | None = None
) -> tuple[int, int, int] | None:
    """(flags, body size, header octets) of the frame starting at `offset`, or None if the
    octets before `end` do not hold its whole header yet. ZmtpError if the flags are bad."""
    limit = len(data) if end is None else end  # type: ignore[arg-type]
    if offset >= limit:
        return None
    flags: int = data[offset]  # type: ignore[index]
    if flags & RESERVED_FLAGS:
        raise ZmtpError(f"frame flags {flags:#04x} set reserved bits (only MORE, LONG, COMMAND exist)")
    if flags & COMMAND and flags & MORE:
        raise ZmtpError(f"command frame with the MORE flag set (flags {flags:#04x})")
    if flags & LONG:
        if limit - offset < LONG_HEADER_BYTES:
            return None
        size: int = _LONG_SIZE.unpack_from(data, offset + 1)[0]  # type: ignore[arg-type]
        if size > MAX_BODY:
            raise ZmtpError(f"frame size {size} is larger than 2**63-1")
        return flags, size, LONG_HEADER_BYTES
    if limit - offset < SHORT_HEADER_BYTES:
        return None
    return flags, data[offset + 1], SHORT_HEADER_BYTES  # type: ignore[index]


def encode_command(name: str, data: BufferLike = b"") -> bytes:
    """A whole command frame."""
    raw = name.encode("ascii")
    if not 0 < len(raw) <= MAX_SHORT_BODY or not raw.isalpha():
        raise ValueError(f"command name {name!r} must be 1..255 letters")
    return encode_frame(bytes((len(raw),)) + raw + bytes(byte_view(data, "command data")), command=True)


def parse_command(body: BufferLike) -> tuple[str, memoryview]:
    """(name, data) of a command frame's body; ZmtpError if it has no valid name."""
    view = byte_view(body, "command")
    if not len(view):
        raise ZmtpError("empty command frame (no command name)")
    size = view[0]
    name = bytes(view[1 : 1 + size])
    if size == 0 or len(name) != size or not name.isalpha():
        raise ZmtpError(f"command name {name[:40]!r} (length octet {size}) is not 1..255 letters")
    return name.decode("ascii"), view[1 + size :]


def encode_properties(properties: Mapping[str, BufferLike]) -> bytes:
    """Metadata properties (READY's data): name (1 octet length), value (4 octets length)."""
    out = bytearray()
    for name, value in properties.items():
        raw = name.encode("ascii")
        if not 0 < len(raw) <= MAX_SHORT_BODY or any(c not in _NAME_CHARS for c in raw):
            raise ValueError(f"property name {name!r} is not 1..255 of A-Z a-z 0-9 - _ . +")
        data = bytes(byte_view(value, "property value"))
        out += bytes((len(raw),)) + raw + _VALUE_SIZE.pack(len(data)) + data
    return bytes(out)


def parse_properties(data: BufferLike) -> dict[str, bytes]:
    """READY's properties, names in lower case (they are case-insensitive); ZmtpError if bad."""
    view = byte_view(data, "properties")
    properties: dict[str, bytes] = {}
    offset = 0
    while offset < len(view):
        size = view[offset]
        name = bytes(view[offset + 1 : offset + 1 + size])
        if size == 0 or len(name) != size or any(c not in _NAME_CHARS for c in name):
            raise ZmtpError(f"READY property name {name[:40]!r} at octet {offset} is not valid")
        offset += 1 + size
        if len(view) - offset < 4:
            raise ZmtpError(f"READY property {name.decode()!r} has no 4-octet value size")
        value_size = _VALUE_SIZE.unpack_from(view, offset)[0]
        offset += 4
        if value_size > len(view) - offset:
            raise ZmtpError(
                f"READY property {name.decode()!r} says {value_size} octets, {len(view) - offset} remain"
            )
        properties[name.decode("ascii").lower()] = bytes(view[offset : offset + value_size])
        offset += value_size
    return properties


def encode_ready(socket_type: str, **extra: BufferLike) -> bytes:
    """The READY command frame announcing `socket_type` (plus `extra` properties)."""
    return encode_command("READY", encode_properties({"Socket-Type": socket_type.encode(), **extra}))


def peer_socket_type(properties: Mapping[str, bytes], own_type: str) -> str:
    """The peer's Socket-Type from its READY properties; ZmtpError if missing or not a valid peer."""
    raw = properties.get("socket-type")
    if raw is None:
        raise ZmtpError("READY has no Socket-Type property")
    peer = raw.decode("ascii", "replace")
    allowed = PEER_TYPES.get(own_type, ())
    if peer not in allowed:
        raise ZmtpError(
            f"peer is a {peer[:40]!r} socket; a {own_type} socket talks to {' or '.join(allowed)}"
        )
    return peer


def check_ready(body: BufferLike, own_type: str) -> str:
    """The handshake's command body must be the peer's READY for a valid peer of `own_type`
    (NULL mechanism): its Socket-Type; ZmtpError naming an ERROR, another command, or a
    wrong or missing Socket-Type."""
    name, data = parse_command(body)
    if name == "ERROR":
        raise ZmtpError(f"peer refused the connection: ERROR {parse_error(data)!r}")
    if name != "READY":
        raise ZmtpError(f"peer sent {name} before READY (NULL mechanism handshake)")
    return peer_socket_type(parse_properties(data), own_type)


def encode_error(reason: str) -> bytes:
    """An ERROR command frame (reason at most 255 octets)."""
    raw = reason.encode("ascii", "replace")[:MAX_SHORT_BODY]
    return encode_command("ERROR", bytes((len(raw),)) + raw)


def parse_error(data: BufferLike) -> str:
    """The reason of an ERROR command (what the peer sent, decoded leniently)."""
    view = byte_view(data, "ERROR data")
    if not len(view):
        return ""
    return bytes(view[1 : 1 + view[0]]).decode("ascii", "replace")


def encode_ping(ttl_deciseconds: int = 0, context: bytes = b"") -> bytes:
    """A PING command frame (ZMTP 3.1)."""
    if len(context) > MAX_PING_CONTEXT:
        raise ValueError(f"ping context has {len(context)} octets, at most {MAX_PING_CONTEXT}")
    return encode_command("PING", _TTL.pack(ttl_deciseconds) + context)


def parse_ping(data: BufferLike) -> tuple[int, bytes]:
    """(ttl in 1/10 s, context) of a PING; ZmtpError if malformed."""
    view = byte_view(data, "PING data")
    if len(view) < 2 or len(view) > 2 + MAX_PING_CONTEXT:
        raise ZmtpError(f"PING data has {len(view)} octets, expected 2 (ttl) + 0..16 (context)")
    return _TTL.unpack_from(view)[0], bytes(view[2:])


def encode_pong(context: bytes = b"") -> bytes:
    """The PONG command frame answering a PING with `context`."""
    if len(context) > MAX_PING_CONTEXT:
        raise ValueError(f"pong context has {len(context)} octets, at most {MAX_PING_CONTEXT}")
    return encode_command("PONG", context)
