"""Is the receiver running? Asked on demand (status, health, an acquisition error).

The driver has no message channel back to the receiver; what it can see is the receiver's
metadata socket `ipc://<ipc_dir>/<D>-image`, which only the live receiver (its PUB socket)
listens on. A connect to that Unix socket tells: a process answers (alive), the file is
there but nobody answers (the receiver died: its socket file is left over), or there is
no file (never started, or stopped cleanly). The answer is kept for a second, so that
frequent status requests cost nothing more; nothing is checked while nobody asks.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from stddaq_common.bus.ipc_socket import who_serves
from stddaq_common.bus.metadata_stream import ipc_file_of

CHECK_EVERY_S = 1.0
"""A check is reused for this long."""


@dataclass(frozen=True, slots=True)
class ReceiverView:
    """What the driver sees of the receiver."""

    address: str
    alive: bool | None
    """A process serves the metadata socket; None: cannot tell (not an ipc:// file)."""
    problem: str | None = None
    """Why it is taken for down (None when alive or unknown)."""


def look_at(address: str) -> ReceiverView:
    """Check once whether a process serves the receiver's metadata socket `address`."""
    path = ipc_file_of(address)
    if path is None:
        return ReceiverView(address, None)
    if not os.path.exists(path):
        return ReceiverView(
            address, False, f"the receiver is not running: no socket at {address} (not started, or stopped)"
        )
    if who_serves(path) is None:
        return ReceiverView(
            address, False,
            f"the receiver is not running: no process serves {address} (it died; its socket file is left)",
        )
    return ReceiverView(address, True)


class ReceiverWatch:
    """`look_at` with the answer kept for CHECK_EVERY_S (thread-safe)."""

    def __init__(self, check_every_s: float = CHECK_EVERY_S) -> None:
        self._lock = threading.Lock()
        self._every = check_every_s
        self._last: tuple[float, ReceiverView] | None = None

    def view(self, address: str) -> ReceiverView:
        """The receiver as seen within the last CHECK_EVERY_S (checked now if older)."""
        now = time.monotonic()
        with self._lock:
            last = self._last
            if last is not None and last[1].address == address and now - last[0] < self._every:
                return last[1]
        seen = look_at(address)
        with self._lock:
            self._last = (time.monotonic(), seen)
        return seen


def with_receiver_named(reason: str, view: ReceiverView) -> str:
    """An acquisition error, naming the receiver first when it is down (what died first)."""
    if view.alive is False and view.problem is not None:
        return f"{view.problem}; {reason}"
    return reason
