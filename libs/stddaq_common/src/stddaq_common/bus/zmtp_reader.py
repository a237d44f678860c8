"""A connecting ZMTP 3 reader without libzmq: one Unix-socket connection, read in the caller's thread.

libzmq's receiving sockets (SUB, PULL) wake their I/O thread for every message (epoll,
read, pipe, a signal to the application thread). This reader has no thread: a receive that
finds no message ready waits in epoll and then reads everything the kernel holds with one
recv and splits it (a `PeerStream` of stddaq_common.wire.zmtp_stream), so a batch of queued
messages costs one wake-up and one system call. The SUB of the metadata stream
(bus.zmtp_subscriber) and the writer's command PULL (bus.zmtp_pull) are this reader with
their own stream.

What stays as with libzmq: the peer may start after the reader, go away and come back (the
connection is attempted again every RECONNECT_S, as libzmq's reconnect interval; the bytes
of a message cut off by a disconnect are dropped, as libzmq drops a partial message); a
reader that does not read lets the kernel's socket buffer fill, then the peer's send queue.
A peer that breaks the protocol is logged, counted in `protocol_errors` and its connection
dropped and attempted again; a peer that does not speak ZMTP 3 raises `PeerNotSpoken` (the
caller falls back to libzmq).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from stddaq_common.rate_limited_log import RateLimitedLog
from stddaq_common.wire import zmtp
from stddaq_common.wire.zmtp_stream import OlderPeer, PeerStream

log = logging.getLogger(__name__)

RECONNECT_S = 0.1
"""Time between connection attempts (libzmq's default ZMQ_RECONNECT_IVL)."""
READ_BYTES = 256 * 1024
"""Bytes asked for per recv (about 2,000 metadata messages)."""
MIN_MESSAGE_BYTES = 8
"""Bytes per message assumed before a read taught the reader its peer's sizes (a ZMTP
frame of a few bytes: a wait for a count of messages rather ends too early than too late)."""
_LOG_INTERVAL_S = 5.0

M = TypeVar("M")


class PeerNotSpoken(Exception):
    """The peer is a ZeroMQ peer of a protocol version this reader does not speak."""


def unix_path_of(address: str) -> str:
    """The AF_UNIX address of an `ipc://` address (`@name`: the abstract namespace);
    ValueError for other transports."""
    if not address.startswith("ipc://"):
        raise ValueError(f"{address} is not an ipc:// address")
    path = address[len("ipc://") :]
    return "\0" + path[1:] if path.startswith("@") else path


class ZmtpReader(Generic[M]):
    """Receives the messages of one peer bound at an `ipc://` address.

    `stream` makes the parser of a fresh connection, `opening` is what is sent on connect
    (greeting and READY), `peer_name` names the peer in the log ("publisher", "driver").
    With `handshake_wait_s` the constructor waits that long for a peer that is there to
    finish the handshake (a SUB then has its subscription in place when it returns)."""

    def __init__(
        self,
        address: str,
        stream: Callable[[], PeerStream[M]],
        opening: bytes,
        *,
        peer_name: str,
        handshake_wait_s: float = 0.0,
    ) -> None:
        self.address = address
        self._path = unix_path_of(address)
        self._new_stream = stream
        self._opening = opening
        self._peer_name = peer_name
        self._sock: socket.socket | None = None
        self._stream = stream()
        self._pending = b""
        self._queue: deque[bytes | M] = deque()
        self._epoll = select.epoll()
        self._next_attempt = 0.0
        self._drained = False
        """The last read found the kernel's buffer empty: wait before reading again."""
        self._closed = False
        self._message_bytes = 0
        """The fewest bytes per message of any read since the connection (0: none yet)."""
        self._warnings = RateLimitedLog(log, _LOG_INTERVAL_S)
        self.connects = 0
        """Connections made (the first one and every reconnection)."""
        self.protocol_errors = 0
        """Connections dropped because the peer broke the protocol."""
        self._attempt()
        if handshake_wait_s > 0:
            try:
                self._finish_handshake(time.monotonic() + handshake_wait_s)
            except PeerNotSpoken:
                self.close()
                raise

    @property
    def connected(self) -> bool:
        """A connection to the peer is open (the handshake may still be under way)."""
        return self._sock is not None

    @property
    def ready(self) -> bool:
        """Connected and past the handshake."""
        return self._sock is not None and self._stream.ready

    def fileno(self) -> int:
        """An fd that is readable while the connection has bytes to read (stable across
        reconnections: an epoll instance), for waiting together with other sockets."""
        return self._epoll.fileno()

    def has_queued(self) -> bool:
        """Messages already read and not yet taken (a wait on fileno() would not see them)."""
        return bool(self._queue)

    def wait_for(self, count: int, timeout_s: float) -> None:
        """Block until about `count` messages wait to be taken, or `timeout_s` passed, in one
        system call: the socket's low-water mark holds the kernel back until that many
        bytes came (at the fewest bytes per message any read had since the connection, a
        peer's messages being much alike; before the first, MIN_MESSAGE_BYTES: it rather
        ends early). What came is read and queued for the next receive. Returns at once
        without a connection."""
        queue = self._queue
        sock = self._sock
        if len(queue) >= count or sock is None or not self._stream.ready or timeout_s <= 0:
            return
        per_message = self._message_bytes or MIN_MESSAGE_BYTES
        need = (count - len(queue)) * per_message - len(self._pending)
        seconds = int(timeout_s)
        timeval = struct.pack("ll", seconds, int((timeout_s - seconds) * 1e6))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, min(max(need, 1), READ_BYTES))
            sock.setblocking(True)
            try:
                data = sock.recv(READ_BYTES)
            finally:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        except BlockingIOError:  # the time is up and nothing came
            self._drained = True
            return
        except OSError as error:
            self._drop(f"receive failed: {error.strerror}")
            return
        if self._take(data):
            self._drained = len(data) < READ_BYTES

    def receive(self, wait_ms: int, limit: int) -> list[bytes | M]:
        """The messages queued or arriving within `wait_ms` (0: only what is there now),
        at most `limit`; empty if none came. PeerNotSpoken for a ZMTP 2 peer."""
        queue = self._queue
        if not queue:
            self._fill(wait_ms)
            if not queue:
                return []
        if limit == 1 or len(queue) == 1:
            return [queue.popleft()]
        if len(queue) <= limit:
            batch = list(queue)
            queue.clear()
            return batch
        return [queue.popleft() for _ in range(limit)]

    def _fill(self, wait_ms: int) -> None:
        """Read what is there; if nothing completes a message, wait for more until the
        deadline (attempting the connection again when it is due). After a read that
        emptied the kernel's buffer the wait comes first (no recv that finds nothing)."""
        deadline = time.monotonic() + wait_ms / 1000.0 if wait_ms > 0 else 0.0
        while True:
            if self._sock is None:
                now = time.monotonic()
                if now >= self._next_attempt:
                    self._attempt()
                if self._sock is None:
                    pause = min(deadline, self._next_attempt) - now
                    if deadline <= now:
                        return
                    if pause > 0:
                        time.sleep(pause)
                    continue
            if not self._drained or deadline == 0.0:
                self._read()
                if self._queue:
                    return
                if self._sock is None:
                    continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._epoll.poll(remaining)
            self._drained = False  # readable, or the time is up (the read then finds nothing)

    def _finish_handshake(self, deadline: float) -> None:
        """Read until the handshake is done, the connection is gone, or the deadline passed."""
        while self._sock is not None and not self._stream.ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._epoll.poll(remaining)
            self._read()

    def _attempt(self) -> None:
        """One connection attempt; on failure the next is due RECONNECT_S later."""
        self._next_attempt = time.monotonic() + RECONNECT_S
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(self._path)
            if sock.send(self._opening) != len(self._opening):
                raise BlockingIOError(errno.EAGAIN, "the opening did not fit")
        except OSError:
            sock.close()
            return
        self._sock = sock
        self._stream = self._new_stream()
        self._pending = b""
        self._drained = False
        self._message_bytes = 0
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        self.connects += 1

    def _drop(self, reason: str | None) -> None:
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        with contextlib.suppress(OSError):
            self._epoll.unregister(sock.fileno())
        sock.close()
        self._pending = b""
        self._next_attempt = time.monotonic() + RECONNECT_S
        if reason is not None:
            self._warnings.warning(
                "dropped", "dropped the connection to %s: %s", self.address, reason
            )

    def _read(self) -> None:
        """Read every byte the kernel holds now and split it into messages."""
        sock = self._sock
        assert sock is not None
        while True:
            try:
                data = sock.recv(READ_BYTES)
            except BlockingIOError:
                self._drained = True
                return
            except OSError as error:
                self._drop(f"receive failed: {error.strerror}")
                return
            if not self._take(data) or len(data) < READ_BYTES:
                self._drained = True
                return  # the kernel had less than asked for: nothing more is there now

    def _take(self, data: bytes) -> bool:
        """Split what one recv brought into messages (answering the peer's commands); False
        if the connection is gone (the peer closed it, or broke ZMTP)."""
        sock = self._sock
        assert sock is not None
        if not data:
            self._drop(None)  # the peer closed (stopped or restarted)
            return False
        if self._pending:
            data = self._pending + data
        replies: list[bytes] = []
        learn = self._stream.ready  # past the handshake: what comes now is messages
        before = len(self._queue)
        try:
            used = self._stream.feed(data, self._queue, replies)
        except OlderPeer as error:
            self._drop(None)
            raise PeerNotSpoken(error.reason) from None
        except zmtp.ZmtpError as error:
            self.protocol_errors += 1
            self._drop(f"the {self._peer_name} broke ZMTP: {error.reason}")
            return False
        self._pending = data[used:] if used < len(data) else b""
        made = len(self._queue) - before
        if made and learn:
            size = used // made
            if size < self._message_bytes or not self._message_bytes:
                self._message_bytes = size
        for reply in replies:
            with contextlib.suppress(OSError):
                sock.send(reply)
        return True

    def close(self) -> None:
        """Close the connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._drop(None)
        self._epoll.close()


__all__ = ["MIN_MESSAGE_BYTES", "READ_BYTES", "RECONNECT_S", "PeerNotSpoken", "ZmtpReader", "unix_path_of"]
