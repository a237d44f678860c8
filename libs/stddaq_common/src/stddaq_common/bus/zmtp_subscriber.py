"""A SUB socket without libzmq: one Unix-socket connection to a PUB, read in the caller's thread.

libzmq's SUB wakes its I/O thread for every message; this is bus.zmtp_reader's
`ZmtpReader` with the SUB stream (stddaq_common.wire.zmtp_sub): no thread, one wake-up and
one recv per batch of queued messages. As with libzmq's SUB, a subscriber that does not
read lets its queue fill (here the kernel's socket buffer, then the publisher's send
queue) and then the publisher drops messages for it. The constructor waits up to
HANDSHAKE_WAIT_S for a publisher that is there, so that the subscription is in place when
it returns (as libzmq's SUB subscribes in its own thread, before the first receive).
"""

from __future__ import annotations

from stddaq_common.bus.zmtp_reader import RECONNECT_S, PeerNotSpoken, ZmtpReader, unix_path_of
from stddaq_common.wire.zmtp_sub import Multipart, SubStream, opening

HANDSHAKE_WAIT_S = 0.5
"""How long the constructor waits for a publisher that is there to finish the handshake."""
_OPENING = opening()


class ZmtpSubscriber(ZmtpReader[Multipart]):
    """Receives the messages of one PUB bound at an `ipc://` address (subscribed to all)."""

    def __init__(self, address: str) -> None:
        super().__init__(
            address, SubStream, _OPENING, peer_name="publisher", handshake_wait_s=HANDSHAKE_WAIT_S
        )


__all__ = ["HANDSHAKE_WAIT_S", "RECONNECT_S", "PeerNotSpoken", "ZmtpSubscriber", "unix_path_of"]
