"""The SUB side of a ZMTP 3 connection as bytes: what to send, and the peer's bytes split into messages.

No sockets here (stddaq_common.bus.zmtp_subscriber moves the bytes); the greeting, READY
and framing are wire.zmtp_stream's `PeerStream`. The SUB side greets as ZMTP 3.0 with the
NULL mechanism, sends READY (Socket-Type SUB) and, once the peer's READY came, subscribes
to every message with a message whose body is %x01 (23/ZMTP 3.0's form). libzmq takes
every frame that comes before it has sent its own READY as a handshake command: a
subscription sent together with the greeting fails the handshake ("unexpected command").
The message form is the only one a 3.0 peer can send, so a 3.1 publisher must accept it
from us (libzmq 4.3 does: tests/common/test_zmtp_subscriber.py); 3.1's SUBSCRIBE command
is never sent, older libzmq releases do not know it. With a 3.0 greeting a 3.1 peer sends
no PING; one that does anyway is answered with PONG.

`SubStream.feed` returns single-part messages as bytes and multipart messages as
`Multipart` (the subscriber counts them as bad; only the first part is kept), and the
subscription among the bytes to send back once the handshake is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from stddaq_common.wire import zmtp
from stddaq_common.wire.zmtp_stream import DEFAULT_MAX_FRAME, OlderPeer, PeerStream
from stddaq_common.wire.zmtp_stream import opening as _opening

SUBSCRIBE_ALL: Final = zmtp.encode_frame(b"\x01")
"""A subscription to every message (ZMTP 3.0: a message of %x01 and the empty prefix)."""


def opening() -> bytes:
    """What the SUB side sends first: greeting and READY (the subscription follows the
    peer's READY, as `SubStream.feed` returns it among the replies)."""
    return _opening("SUB")


@dataclass(frozen=True, slots=True)
class Multipart:
    """A message of more than one part: how many, and the first part (for the log)."""

    parts: int
    first: bytes


Message = bytes | Multipart
UNLIMITED_PARTS: Final = 2**62
"""A SUB keeps only a multipart message's first part: any number of parts is read (and
the message counted as bad by the subscriber), none breaks the connection."""


class SubStream(PeerStream[Multipart]):
    """The publisher's side of one connection, from its first octet: greeting, READY, messages."""

    __slots__ = ("_first",)

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__("SUB", max_frame, max_parts=UNLIMITED_PARTS)
        self._first = b""

    def on_ready(self, replies: list[bytes]) -> None:
        """Subscribe to everything once the publisher's READY came."""
        replies.append(SUBSCRIBE_ALL)

    def _more(self, body: bytes) -> None:
        if self._parts == 1:
            self._first = body

    def _last(self, body: bytes) -> Multipart:
        message = Multipart(self._parts + 1, self._first)
        self._first = b""
        return message


__all__ = [
    "DEFAULT_MAX_FRAME",
    "SUBSCRIBE_ALL",
    "Message",
    "Multipart",
    "OlderPeer",
    "SubStream",
    "opening",
]
