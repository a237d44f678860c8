"""One side of a ZMTP 3 connection as bytes: the peer's greeting, READY and messages.

No sockets here (stddaq_common.bus moves the bytes). `PeerStream(own_type).feed` takes the
bytes read so far from a peer and returns what they complete: single-part messages as
bytes, multipart messages as `parts_of` makes them (a list of the parts by default), and
bytes to send back (PONG, and what `on_ready` adds once the handshake is done). Bytes of an
incomplete frame stay with the caller, who feeds them again with what comes next.

What is checked: the greeting (ZMTP 3.0 or later, NULL mechanism; a ZMTP 2 greeting raises
`OlderPeer`), the peer's READY (its Socket-Type must fit `own_type`: a PULL talks to a
PUSH, ...), flags, a frame over `max_frame`, a message of more than `max_parts` parts.
Anything that breaks the protocol raises ZmtpError: the connection must be dropped.
PING is answered with PONG; an ERROR command raises; other commands are ignored.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from typing import Final, Generic, TypeVar

from stddaq_common.wire import zmtp

DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
"""Largest frame accepted by default (control and metadata messages are far smaller)."""
DEFAULT_MAX_PARTS: Final = 4096
"""Most parts a message may have."""
MAX_READY_BYTES: Final = zmtp.MAX_SHORT_BODY * 256
"""Largest READY command accepted."""

M = TypeVar("M")
"""What a multipart message becomes."""


class OlderPeer(zmtp.ZmtpError):
    """The peer greets with a ZMTP older than 3.0 (ZeroMQ 3.x or older)."""


def opening(own_type: str) -> bytes:
    """What a `own_type` socket sends first: a ZMTP 3.0 greeting (NULL) and its READY."""
    return zmtp.greeting(minor=0) + zmtp.encode_ready(own_type)


class PeerStream(Generic[M]):
    """The peer's side of one connection, from its first octet: greeting, READY, messages.

    Subclasses choose what a multipart message becomes (`_more`, `_last`) and what is sent
    once the handshake is done (`on_ready`)."""

    __slots__ = ("_greeted", "_parts", "_ready", "max_frame", "max_parts", "own_type", "peer", "peer_type")

    def __init__(
        self, own_type: str, max_frame: int = DEFAULT_MAX_FRAME, max_parts: int = DEFAULT_MAX_PARTS
    ) -> None:
        self.own_type = own_type
        self.max_frame = max_frame
        self.max_parts = max_parts
        self.peer: zmtp.Greeting | None = None
        """The peer's greeting, once it came."""
        self.peer_type = ""
        """The peer's Socket-Type, once its READY came."""
        self._greeted = False
        self._ready = False
        self._parts = 0
        """Parts of the multipart message under way (0: none)."""

    @property
    def ready(self) -> bool:
        """The handshake is done: messages flow."""
        return self._ready

    def on_ready(self, replies: list[bytes]) -> None:
        """Called once the peer's READY came; may add bytes to send (nothing by default)."""

    def _more(self, body: bytes) -> None:
        """A part with MORE set (the first `self._parts` parts of the message are in)."""
        raise NotImplementedError

    def _last(self, body: bytes) -> M:
        """The last part of a multipart message: the message as it goes out."""
        raise NotImplementedError

    def feed(self, data: bytes, out: MutableSequence[bytes | M], replies: list[bytes]) -> int:
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
            self.on_ready(replies)
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
                self._parts += 1
                if self._parts >= self.max_parts:
                    raise zmtp.ZmtpError(f"a message of more than {self.max_parts} parts")
                self._more(body)
            elif self._parts:
                append(self._last(body))
                self._parts = 0
            else:
                append(body)
        return pos

    def _greeting(self, data: bytes) -> int:
        if len(data) >= zmtp.SIGNATURE_BYTES:
            zmtp.check_signature(data[: zmtp.SIGNATURE_BYTES])
            if len(data) > zmtp.SIGNATURE_BYTES and data[zmtp.SIGNATURE_BYTES] < 3:
                raise OlderPeer(
                    f"the peer greets with ZMTP revision {data[zmtp.SIGNATURE_BYTES]} "
                    "(ZeroMQ 3.x or older); this side speaks ZMTP 3.0 or later"
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
        if size > MAX_READY_BYTES:
            raise zmtp.ZmtpError(f"READY command of {size} octets is too large")
        stop = pos + header_bytes + size
        if stop > end:
            return pos
        self.peer_type = zmtp.check_ready(data[pos + header_bytes : stop], self.own_type)
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


class PartsStream(PeerStream[list[bytes]]):
    """A PeerStream that keeps every part of a multipart message (a list of bytes)."""

    __slots__ = ("_held",)

    def __init__(
        self, own_type: str, max_frame: int = DEFAULT_MAX_FRAME, max_parts: int = DEFAULT_MAX_PARTS
    ) -> None:
        super().__init__(own_type, max_frame, max_parts)
        self._held: list[bytes] = []

    def _more(self, body: bytes) -> None:
        self._held.append(body)

    def _last(self, body: bytes) -> list[bytes]:
        parts = self._held
        parts.append(body)
        self._held = []
        return parts


__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_PARTS",
    "OlderPeer",
    "PartsStream",
    "PeerStream",
    "opening",
]
