"""What a bound ZMTP 3.0 socket spoken without libzmq needs whatever its type: the listener on
a Unix socket path, a wake pipe, one daemon thread that accepts connections, reads what
peers send and pushes their queued output, and each peer's output queue.

The socket types (bus.zmtp_publisher's PUB, bus.zmtp_push's PUSH) subclass `BoundSocket`:
they send from the caller's thread straight into a peer's socket, queue what it does not
take in the peer's `out` and call `_flush` / `_wake`; they parse what a peer sends
(`_received`) and say how a peer is dropped (`_disconnect`, ending in `_remove`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import socket
import threading
from typing import Generic, TypeVar

READ_BYTES = 65536
FLUSH_BATCH = 64
"""Queued messages handed to one sendmsg."""


class Connection:
    """One connected peer: its socket and queued output (a subclass adds its input)."""

    __slots__ = ("out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out: collections.deque[bytes | memoryview] = collections.deque()


PeerT = TypeVar("PeerT", bound=Connection)


class BoundSocket(Generic[PeerT]):
    """A listener, a wake pipe and the connection thread; see the module docstring.

    A subclass sets its own state, then calls `_start`; it defines `_new_peer`,
    `_received` and `_disconnect`. `IDLE_WAKE_MS` (None: never) makes the thread wake that
    often while output is queued and push every queue after each wake (instead of
    pushing a queue when its socket polls writable)."""

    IDLE_WAKE_MS: int | None = None
    _CLOSED_BY_PEER = "closed by the peer"
    """The (debug) log reason when a peer closes its end."""

    _lock: threading.Lock | threading.Condition
    """Held by the thread and by the subclass's send path around every peer's state."""

    def _start(self, path: str, hello: bytes, thread_name: str) -> None:
        """Bind the listener at `path` (OSError if it cannot) and start the thread; `hello`
        is what every peer gets first (greeting and READY)."""
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(path)
            self._listener.listen(64)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self._peers: list[PeerT] = []
        self._ready: list[PeerT] = []
        """The peers past the handshake (what the send path sends to)."""
        self._hello = hello
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the subclass's part

    def _new_peer(self, sock: socket.socket) -> PeerT:
        """The state of a newly accepted connection."""
        raise NotImplementedError

    def _received(self, peer: PeerT, chunks: list[bytes]) -> None:
        """Take what one read found (perhaps nothing); the lock is held."""
        raise NotImplementedError

    def _disconnect(self, peer: PeerT, reason: str, *, quiet: bool = False) -> None:
        """Log why `peer` goes and `_remove` it (nothing if it is gone already)."""
        raise NotImplementedError

    def _room(self) -> None:
        """Called (lock held) when a queue shrank or the socket closed; nothing here."""

    # ------------------------------------------------------------------ shared

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def close(self) -> None:
        """Stop the thread and close every connection (queued messages are discarded)."""
        if self._closing:
            return
        self._closing = True
        self._wake()
        self._thread.join(timeout=5.0)
        with self._lock:
            for peer in self._peers:
                peer.sock.close()
            self._peers = []
            self._ready = []
            self._room()
        self._listener.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _flush(self, peer: PeerT) -> None:
        """Send what waits in the peer's queue, as far as its socket takes it (lock held)."""
        out = peer.out
        while out:
            batch = [out[index] for index in range(min(len(out), FLUSH_BATCH))]
            try:
                sent = peer.sock.sendmsg(batch, [], socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self._disconnect(peer, f"send failed: {error.strerror or error}", quiet=True)
                return
            while sent and out:
                first = out[0]
                if sent >= len(first):
                    sent -= len(first)
                    out.popleft()
                else:
                    out[0] = memoryview(first)[sent:]
                    return

    def _remove(self, peer: PeerT) -> None:
        """Forget `peer`, discard its queue and close its socket (lock held)."""
        self._peers.remove(peer)
        if peer in self._ready:
            self._ready = [other for other in self._ready if other is not peer]
        peer.out.clear()
        peer.sock.close()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        self._serve()

    def _serve(self) -> None:
        idle_wake_ms = self.IDLE_WAKE_MS
        while not self._closing:
            poller = select.poll()
            poller.register(self._wake_read, select.POLLIN)
            poller.register(self._listener, select.POLLIN)
            queued = False
            with self._lock:
                by_fd: dict[int, PeerT] = {}
                for each in self._peers:
                    mask = select.POLLIN
                    if each.out:
                        mask |= select.POLLOUT
                        queued = True
                    fd = each.sock.fileno()
                    by_fd[fd] = each
                    poller.register(fd, mask)
            events = poller.poll(idle_wake_ms if queued else None)
            if self._closing:
                return
            with self._lock:
                for fd, event in events:
                    if fd == self._wake_read:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_read, 4096)
                        continue
                    if fd == self._listener.fileno():
                        self._accept()
                        continue
                    polled = by_fd.get(fd)
                    if polled is None or polled not in self._peers:
                        continue
                    if event & (select.POLLIN | select.POLLERR | select.POLLHUP):
                        self._read(polled)
                    if idle_wake_ms is not None or not event & select.POLLOUT:
                        continue
                    if polled in self._peers and polled.out:
                        self._flush(polled)
                        self._room()
                if queued and idle_wake_ms is not None:
                    for each in list(self._peers):
                        if each.out:
                            self._flush(each)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self._accept_failed(error)
                return
            sock.setblocking(False)
            peer = self._new_peer(sock)
            self._peers.append(peer)
            peer.out.append(self._hello)
            self._flush(peer)

    def _accept_failed(self, error: OSError) -> None:
        """Log a failed accept (the thread goes on)."""
        raise NotImplementedError

    def _read(self, peer: PeerT) -> None:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = peer.sock.recv(READ_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                self._disconnect(peer, f"connection lost: {error.strerror or error}", quiet=True)
                return
            if not chunk:
                self._disconnect(peer, self._CLOSED_BY_PEER, quiet=True)
                return
            chunks.append(chunk)
            if len(chunk) < READ_BYTES:
                break
        self._received(peer, chunks)
