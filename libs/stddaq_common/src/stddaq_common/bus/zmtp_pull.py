"""A PULL socket without libzmq: one Unix-socket connection to a PUSH, read in the caller's thread.

bus.zmtp_reader's `ZmtpReader` with a PULL stream (Socket-Type PULL in READY; a message's
parts kept: single-part messages as bytes, multipart ones as a list of bytes). libzmq's
PULL wakes its I/O thread and then the caller for each message; this reader reads every
message the kernel holds with one recv when the caller asks and none is queued. The PUSH
may start later, go away and come back (attempted again every RECONNECT_S).
"""

from __future__ import annotations

from typing import Final

from stddaq_common.bus.zmtp_reader import ZmtpReader
from stddaq_common.wire.zmtp_stream import DEFAULT_MAX_FRAME, PartsStream, opening

OWN_TYPE: Final = "PULL"
_OPENING = opening(OWN_TYPE)


def _pull_stream() -> PartsStream:
    return PartsStream(OWN_TYPE, DEFAULT_MAX_FRAME)


class ZmtpPull(ZmtpReader[list[bytes]]):
    """Receives the messages of one PUSH bound at an `ipc://` address."""

    def __init__(self, address: str) -> None:
        super().__init__(address, _pull_stream, _OPENING, peer_name="PUSH peer")


__all__ = ["ZmtpPull"]
