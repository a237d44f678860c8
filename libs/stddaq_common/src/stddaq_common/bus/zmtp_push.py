"""A ZeroMQ PUSH socket bound to a Unix socket path, spoken without libzmq.

libzmq's PUSH hands every message to its I/O thread (the caller writes an eventfd, the I/O
thread wakes, sends, and the receiving side's I/O thread wakes again). This PUSH sends each
message from the caller's thread straight into one peer's socket: one non-blocking `send`.

On the wire it is a libzmq PUSH (23/ZMTP 3.0, NULL mechanism), so any PULL peer (pyzmq,
libzmq, std_daq's C++ writer) connects to it unchanged: greeting (version 3.0), READY with
Socket-Type PUSH, then each message as its frames to one peer. As libzmq's PUSH it accepts
any number of PULL peers and deals messages round-robin to those past the handshake whose
queue has room (a multipart message goes whole to one peer).

Queues: a message that the peer's socket buffer does not take now waits in that peer's
queue, up to `sndhwm` messages, and is flushed by the next send or by the thread once the
socket takes more. A send that finds no peer (none connected, or every queue full) waits
up to its timeout for one and returns False if none came; nothing is dropped silently
while a peer is connected. Messages still queued for a peer whose connection closes cannot
be delivered (as with libzmq): they are counted in `lost` and logged.

A daemon thread (bus.zmtp_bound, shared with the own PUB) accepts connections, runs the
handshakes (the peer's greeting and READY with Socket-Type PULL), answers PING and notices
closed peers; it wakes only for those (and while a peer has queued output, when its socket
takes more), never per message. A peer that breaks the protocol (bad greeting, not a PULL,
a ZMTP 2 peer, a message from a PULL) is logged, counted in `protocol_errors` and
disconnected; the socket keeps serving the others.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence

from stddaq_common.bus.zmtp_bound import BoundSocket, Connection
from stddaq_common.rate_limited_log import RateLimitedLog
from stddaq_common.wire import zmtp
from stddaq_common.wire.zmtp_stream import OlderPeer, PartsStream, opening

log = logging.getLogger(__name__)

OWN_TYPE = "PUSH"
MAX_INPUT_BYTES = 64 * 1024
"""A peer whose unparsed input grows past this is disconnected (a PULL sends only its
greeting, READY and perhaps PING)."""
_LOG_INTERVAL_S = 5.0


def encode_frames(parts: bytes | Sequence[bytes]) -> bytes:
    """One message as it goes on the wire: a single part, or the parts with MORE on all but
    the last."""
    if isinstance(parts, bytes):
        return zmtp.single_frame(parts)
    if not parts:
        raise ValueError("a message has at least one part")
    return zmtp.encode_message(list(parts))


class _Peer(Connection):
    """One connected PULL: its socket, handshake, queued output."""

    __slots__ = ("input", "stream")

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.stream = PartsStream(OWN_TYPE)
        self.input = b""


class ZmtpPush(BoundSocket[_Peer]):
    """PUSH semantics on a bound Unix stream socket; see the module docstring."""

    transport = "zmtp"

    def __init__(self, path: str, *, sndhwm: int, name: str = "push") -> None:
        if sndhwm < 1:
            raise ValueError(f"sndhwm must be >= 1, got {sndhwm}")
        self._hwm = sndhwm
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._lock = self._cond
        self._next = 0
        self._warnings = RateLimitedLog(log, _LOG_INTERVAL_S)
        self.sent = 0
        """Messages accepted (sent or queued for a peer)."""
        self.lost = 0
        """Messages that were queued for a peer whose connection closed."""
        self.protocol_errors = 0
        """Connections dropped because the peer broke the protocol."""
        self.connects = 0
        """Peers that completed the handshake."""
        self._start(path, opening(OWN_TYPE), f"{name}-push")

    @property
    def peers(self) -> int:
        """Peers past the handshake."""
        return len(self._ready)

    def send(self, parts: bytes | Sequence[bytes], timeout_s: float = 0.0) -> bool:
        """Deal one message (bytes: one part) to the next peer with room; if none has room
        now, wait up to `timeout_s` for one. False if it could not go (nothing was sent)."""
        frames = encode_frames(parts)
        with self._cond:
            if self._place(frames):
                return True
            if timeout_s <= 0:
                return False
            deadline = time.monotonic() + timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
                if self._place(frames):
                    return True

    def _place(self, frames: bytes) -> bool:
        """Send or queue `frames` to one ready peer with room (lock held)."""
        ready = self._ready
        count = len(ready)
        if not count:
            return False
        start = self._next
        hwm = self._hwm
        for step in range(count):
            peer = ready[(start + step) % count]
            out = peer.out
            if out:
                self._flush(peer)
                if peer not in self._ready or len(out) >= hwm:
                    continue
            if out:
                out.append(frames)  # behind what waits (order kept); the thread is awake for it
            else:
                try:
                    done = peer.sock.send(frames, socket.MSG_NOSIGNAL)
                except (BlockingIOError, InterruptedError):
                    done = 0
                except OSError as error:
                    self._disconnect(peer, f"send failed: {error.strerror or error}", quiet=True)
                    return self._place(frames)
                if done < len(frames):
                    out.append(memoryview(frames)[done:] if done else frames)
                    self._wake()  # the thread pushes the rest once the socket takes it
            self._next = (start + step + 1) % count
            self.sent += 1
            return True
        return False

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:  # a bug here must not pass unseen: sends then find no peer
            log.exception("%s: the connection thread failed; no writer can connect any more", self._name)
            raise

    def _room(self) -> None:
        self._cond.notify_all()  # senders waiting for a peer with room look again

    def _new_peer(self, sock: socket.socket) -> _Peer:
        return _Peer(sock)

    def _accept_failed(self, error: OSError) -> None:
        self._warnings.warning("accept", "%s: accept failed: %s", self._name, error.strerror or error)

    def _received(self, peer: _Peer, chunks: list[bytes]) -> None:
        data = peer.input
        for chunk in chunks:
            data += chunk
        was_ready = peer.stream.ready
        messages: list[bytes | list[bytes]] = []
        replies: list[bytes] = []
        try:
            used = peer.stream.feed(data, messages, replies)
        except OlderPeer as error:
            self._broken(peer, f"{error.reason}; set STDDAQ_COMMAND_TRANSPORT=libzmq for such peers")
            return
        except zmtp.ZmtpError as error:
            self._broken(peer, error.reason)
            return
        if messages:
            self._broken(peer, f"a {OWN_TYPE} peer ({peer.stream.peer_type}) sent a message")
            return
        peer.input = data[used:]
        if len(peer.input) > MAX_INPUT_BYTES:
            self._broken(peer, f"more than {MAX_INPUT_BYTES} octets of input not understood")
            return
        if replies:
            peer.out.extend(replies)
            self._flush(peer)
        if peer.stream.ready and not was_ready and peer in self._peers:
            self._ready = [*self._ready, peer]
            self.connects += 1
            self._cond.notify_all()

    def _broken(self, peer: _Peer, reason: str) -> None:
        self._disconnect(peer, f"the peer broke ZMTP: {reason}")
        self.protocol_errors += 1  # after the log line: a reader of the count finds it logged

    def _disconnect(self, peer: _Peer, reason: str, *, quiet: bool = False) -> None:
        if peer not in self._peers:
            return
        was_ready = peer in self._ready
        queued = len(peer.out) if was_ready else 0
        if queued:  # counted and logged before `peers` shows the peer gone
            self.lost += queued
            log.warning(
                "%s: a peer's connection closed with %d messages queued for it, not delivered (%s)",
                self._name, queued, reason,
            )
        elif quiet:
            log.debug("%s: a peer went away: %s", self._name, reason)
        else:
            self._warnings.warning("dropped", "%s: dropped a peer: %s", self._name, reason)
        self._remove(peer)


__all__ = ["ZmtpPush", "encode_frames"]
