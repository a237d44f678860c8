"""One SUB side of a ZMTP 3 connection as bytes: what to send, and the peer's bytes split into messages.

No sockets here (stddaq_common.bus.zmtp_subscriber moves the bytes). The SUB side greets as
ZMTP 3.0 with the NULL mechanism, sends READY (Socket-Type SUB) and, once the peer's READY
came, subscribes to every message with a message whose body is %x01 (23/ZMTP 3.0's form).
libzmq takes every frame that comes before it has sent its own READY as a handshake
command: a subscription sent together with the greeting fails the handshake ("unexpected
command"). The message form is the only one a 3.0 peer can send, so a 3.1 publisher must
accept it from us (libzmq 4.3 does: tests/common/test_zmtp_subscriber.py); 3.1's SUBSCRIBE
command is never sent, older libzmq releases do not know it. With a 3.0 greeting a 3.1
peer sends no PING; one that does anyway is answered with PONG.

`SubStream.feed` takes the bytes read so far and returns what they complete: single-part
messages as bytes, multipart messages as `Multipart` (the subscriber counts them as bad),
and bytes to send back (the subscription after the handshake, PONG). Bytes of an
incomplete frame stay with the caller, who feeds them again with what comes next.
Anything that breaks the protocol (a bad greeting, a peer that is not a PUB, an ERROR
command, bad flags, a frame over `max_frame`) raises ZmtpError: the connection must be
dropped.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from dataclasses import dataclass
from typing import Final

from stddaq_common.wire import zmtp

SUBSCRIBE_ALL: Final = zmtp.encode_frame(b"\x01")
"""A subscription to every message (ZMTP 3.0: a message of %x01 and the empty prefix)."""
DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
"""Largest frame accepted (metadata messages are about 100 octets)."""


def opening() -> bytes:
    """What the SUB side sends first: greeting and READY (the subscription follows the
    peer's READY, as `SubStream.feed` returns it among the replies)."""
    return zmtp.greeting(minor=0) + zmtp.encode_ready("SUB")


class OlderPeer(zmtp.ZmtpError):
    """The peer greets with a ZMTP older than 3.0 (ZeroMQ 3.x or older)."""


@dataclass(frozen=True, slots=True)
class Multipart:
    """A message of more than one part: how many, and the first part (for the log)."""

    parts: int
    first: bytes


Message = bytes | Multipart


class SubStream:
    """The peer's side of one connection, from its first octet: greeting, READY, messages."""

    __slots__ = ("_first", "_greeted", "_parts", "_ready", "max_frame", "peer")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.peer: zmtp.Greeting | None = None
        """The peer's greeting, once it came."""
        self._greeted = False
        self._ready = False
        self._parts = 0
        """Parts of the multipart message under way (0: none)."""
        self._first = b""

    @property
    def ready(self) -> bool:
        """The handshake is done: messages flow."""
        return self._ready

    def feed(self, data: bytes, out: MutableSequence[Message], replies: list[bytes]) -> int:
        """Split `data` (everything not consumed before, then what came): append whole
        messages to `out`, bytes to send back to `replies`; return the octets consumed.
        ZmtpError if the peer broke the protocol."""
        pos = 0
        if not self._greeted:
            pos = self._greeting(data)
            if not self._greeted:
                return pos
        end = len(data)
        if not self._ready:
            pos = self._handshake(data, pos, end)
            if not self._ready:
                return pos
            replies.append(SUBSCRIBE_ALL)
        append = out.append
        max_frame = self.max_frame
        while pos + 2 <= end:
            flags = data[pos]
            if flags == 0 and not self._parts:  # the common case: a short one-part message
                stop = pos + 2 + data[pos + 1]
                if stop > end:
                    break
                append(data[pos + 2 : stop])
                pos = stop
                continue
            header = zmtp.parse_frame_header(data, pos, end)
            if header is None:
                break
            flags, size, header_bytes = header
            if size > max_frame:
                raise zmtp.ZmtpError(f"frame of {size} octets, more than the {max_frame} accepted")
            stop = pos + header_bytes + size
            if stop > end:
                break
            body = data[pos + header_bytes : stop]
            pos = stop
            if flags & zmtp.COMMAND:
                self._command(body, replies)
            elif flags & zmtp.MORE:
                if not self._parts:
                    self._first = body
                self._parts += 1
            elif self._parts:
                append(Multipart(self._parts + 1, self._first))
                self._parts = 0
                self._first = b""
            else:
                append(body)
        return pos

    def _greeting(self, data: bytes) -> int:
        if len(data) >= zmtp.SIGNATURE_BYTES:
            zmtp.check_signature(data[: zmtp.SIGNATURE_BYTES])
            if len(data) > zmtp.SIGNATURE_BYTES and data[zmtp.SIGNATURE_BYTES] < 3:
                raise OlderPeer(
                    f"the publisher greets with ZMTP revision {data[zmtp.SIGNATURE_BYTES]} "
                    "(ZeroMQ 3.x or older); this reader speaks ZMTP 3.0 or later"
                )
        if len(data) < zmtp.GREETING_BYTES:
            return 0
        peer = zmtp.parse_greeting(data[: zmtp.GREETING_BYTES])
        if peer.mechanism != zmtp.NULL_MECHANISM:
            raise zmtp.ZmtpError(f"peer uses the {peer.mechanism} mechanism; only NULL is spoken")
        self.peer = peer
        self._greeted = True
        return zmtp.GREETING_BYTES

    def _handshake(self, data: bytes, pos: int, end: int) -> int:
        header = zmtp.parse_frame_header(data, pos, end)
        if header is None:
            return pos
        flags, size, header_bytes = header
        if not flags & zmtp.COMMAND:
            raise zmtp.ZmtpError("peer sent a message before its READY command")
        if size > zmtp.MAX_SHORT_BODY * 256:
            raise zmtp.ZmtpError(f"READY command of {size} octets is too large")
        stop = pos + header_bytes + size
        if stop > end:
            return pos
        zmtp.check_ready(data[pos + header_bytes : stop], "SUB")
        self._ready = True
        return stop

    @staticmethod
    def _command(body: bytes, replies: list[bytes]) -> None:
        name, data = zmtp.parse_command(body)
        if name == "PING":
            _ttl, context = zmtp.parse_ping(data)
            replies.append(zmtp.encode_pong(context))
        elif name == "ERROR":
            raise zmtp.ZmtpError(f"peer closed with ERROR {zmtp.parse_error(data)!r}")
        # PONG and commands unknown here are ignored, as ZMTP allows.


__all__ = [
    "DEFAULT_MAX_FRAME",
    "SUBSCRIBE_ALL",
    "Message",
    "Multipart",
    "OlderPeer",
    "SubStream",
    "opening",
]
