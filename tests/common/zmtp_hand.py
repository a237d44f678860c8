"""Hand-written ZMTP peers for the own ZMTP sockets' tests: exact bytes, exact splits.

`connect_unix` is the connecting side, `read_exactly` reads a fixed number of octets from a
peer; `HandListener` is the bound side of a socket type written by hand (the tests of the
own SUB and PULL subclass it with their handshake)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

DEADLINE_S = 30.0
"""Only guards against a hang; a passing run never waits this long."""


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """`size` octets from `sock` (an assertion names how far it got if the peer closes)."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"the connection closed after {len(data)} of {size} octets"
        data += chunk
    return data


def connect_unix(path: str) -> socket.socket:
    """A blocking connection to the Unix socket at `path` (reads time out after DEADLINE_S)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(DEADLINE_S)
    sock.connect(path)
    return sock


class HandListener:
    """A bound Unix socket that the socket under test connects to; one connection at a time."""

    def __init__(self, path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.listener.settimeout(DEADLINE_S)
        self.conn: socket.socket | None = None

    def accept_while(self, poke: Callable[[], object], who: str) -> socket.socket:
        """The next connection of `who`, calling `poke` (its receive call, where it
        connects) until it comes."""
        self.listener.settimeout(0.01)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert time.monotonic() < deadline, f"{who} never connected"
            try:
                conn, _ = self.listener.accept()
                break
            except TimeoutError:
                poke()
        conn.settimeout(DEADLINE_S)
        self.conn = conn
        return conn

    def read(self, size: int) -> bytes:
        """`size` octets from the current connection."""
        assert self.conn is not None
        return read_exactly(self.conn, size)

    def send(self, data: bytes) -> None:
        """Put `data` on the current connection as one sendall."""
        assert self.conn is not None
        self.conn.sendall(data)

    def close(self) -> None:
        """Close the connection and the listener."""
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
