"""Which transport a socket of stddaq's own ipc:// channels uses: the own ZMTP code or libzmq.

The own code (bus.zmtp_*) speaks ZeroMQ's wire protocol over Unix sockets from the
caller's thread; libzmq is the fallback and the reference: taken for other addresses
(tcp://, and abstract ipc://@name where a channel binds), when an environment variable says
so, and automatically for a peer older than ZMTP 3.0 (where the connecting side can tell).
"""

from __future__ import annotations

import os
from typing import Final

ZMTP: Final = "zmtp"
"""The own ZMTP 3 code: no libzmq I/O thread. The default for ipc:// addresses."""
LIBZMQ: Final = "libzmq"
"""libzmq's sockets through pyzmq."""


def choose_transport(
    address: str, requested: str | None, env_name: str, *, abstract_ok: bool = True
) -> str:
    """The transport for `address`: `requested`, else $`env_name`, else ZMTP; LIBZMQ for
    addresses other than ipc:// (and abstract ones unless `abstract_ok`). ValueError for
    a name that is neither."""
    choice = requested or os.environ.get(env_name) or ZMTP
    if choice not in (ZMTP, LIBZMQ):
        raise ValueError(f"{env_name} {choice!r} is not {ZMTP!r} or {LIBZMQ!r}")
    if not address.startswith("ipc://"):
        return LIBZMQ
    if not abstract_ok and address.startswith("ipc://@"):
        return LIBZMQ
    return choice


__all__ = ["LIBZMQ", "ZMTP", "choose_transport"]
