"""A ZeroMQ PUB socket bound to a Unix socket path, spoken without libzmq.

libzmq's PUB hands every message to its I/O thread: the caller's `send` polls its mailbox
and writes an eventfd, the I/O thread wakes, reads it, arms and disarms POLLOUT and sends
(measured here: about 60 us of CPU per isolated message, against 5 us for one `send`
system call). This publisher sends each message from the caller's thread straight into
every subscriber's socket: one non-blocking `send` per subscriber and message.

On the wire it is a libzmq PUB (23/ZMTP 3.0, NULL mechanism), so any SUB peer (pyzmq,
libzmq, std_daq's C++ services) connects to it unchanged: greeting (version 3.0), READY
with Socket-Type PUB, then each message as one frame to every subscriber with a matching
subscription. Subscriptions come as messages (first octet 1: subscribe, 0: cancel, then
the prefix) or, from ZMTP 3.1 peers, as SUBSCRIBE / CANCEL commands; both are understood.
A PING is answered with PONG.

A daemon thread (bus.zmtp_bound, shared with the own PUSH) accepts connections, runs the
handshakes, reads subscriptions and notices closed peers; it wakes only for those (and
every `IDLE_WAKE_S` to push queued output), never per message. When a subscriber's socket
buffer is full, up to `sndhwm` messages wait in its queue (flushed on the next publish or
by the thread); beyond that, as with a libzmq PUB, the message is not sent to that
subscriber, or with `count_drops` (libzmq's XPUB_NODROP) to no subscriber at all and
`publish_bytes` returns False. A peer that breaks the protocol is logged and disconnected.
"""

from __future__ import annotations

import logging
import socket
import threading

from stddaq_common.bus.zmtp_bound import BoundSocket, Connection
from stddaq_common.wire import zmtp

log = logging.getLogger(__name__)

OWN_TYPE = "PUB"
IDLE_WAKE_S = 0.05
"""Longest the thread sleeps while a subscriber has queued output (it then pushes it)."""
MAX_INPUT_BYTES = 1024 * 1024
"""A subscriber whose unparsed input grows past this is disconnected (a subscription is tiny)."""

_GREETING = 0
_HANDSHAKE = 1
_READY = 2


class _Subscriber(Connection):
    """One connected peer: its socket, handshake state, subscriptions and queued output."""

    __slots__ = ("everything", "input", "prefixes", "state")

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.state = _GREETING
        self.input = bytearray()
        self.prefixes: list[bytes] = []
        """Subscribed prefixes (as libzmq, a prefix subscribed twice needs two cancels)."""
        self.everything = False
        """True while the empty prefix is subscribed (every message matches)."""

    def wants(self, payload: bytes) -> bool:
        """True if a subscription matches `payload`."""
        return self.everything or any(payload.startswith(prefix) for prefix in self.prefixes)


class ZmtpPublisher(BoundSocket[_Subscriber]):
    """PUB semantics on a bound Unix stream socket; see the module docstring."""

    IDLE_WAKE_MS = int(IDLE_WAKE_S * 1000)
    _CLOSED_BY_PEER = "closed by the subscriber"

    def __init__(self, path: str, *, sndhwm: int, count_drops: bool) -> None:
        self._hwm = sndhwm
        self._count_drops = count_drops
        self._lock = threading.Lock()
        self._start(path, zmtp.greeting(0) + zmtp.encode_ready(OWN_TYPE), "metadata-pub")

    def send(self, payload: bytes) -> bool:
        """Send one single-frame message to every matching subscriber; False only with
        count_drops when a matching subscriber's queue is full (then nobody gets it)."""
        frame = zmtp.single_frame(payload)
        hwm = self._hwm
        with self._lock:
            ready = self._ready
            if self._count_drops:
                for sub in ready:
                    if len(sub.out) >= hwm and sub.wants(payload):
                        return False
            for sub in ready:
                if not sub.everything and not sub.wants(payload):
                    continue
                if sub.out:
                    if len(sub.out) < hwm:
                        sub.out.append(frame)
                    self._flush(sub)
                    continue
                sent = self._send_now(sub, frame)
                if sent is not None and sent < len(frame):
                    self._queue_rest(sub, [frame], sent)
        return True

    def send_all(self, payloads: list[bytes]) -> bool:
        """Send several single-frame messages, in order, as `send` would one by one, with
        one system call per subscriber; False (nothing sent) with count_drops, where each
        message needs its own answer (call `send` for each then)."""
        if self._count_drops:
            return False
        frames = [zmtp.single_frame(payload) for payload in payloads]
        hwm = self._hwm
        with self._lock:
            for sub in self._ready:
                wanted = frames if sub.everything else [
                    frame for frame, payload in zip(frames, payloads, strict=True) if sub.wants(payload)
                ]
                if not wanted:
                    continue
                out = sub.out
                if out:
                    for frame in wanted:
                        if len(out) < hwm:
                            out.append(frame)
                    self._flush(sub)
                    continue
                data = wanted[0] if len(wanted) == 1 else b"".join(wanted)
                sent = self._send_now(sub, data)
                if sent is not None and sent < len(data):
                    self._queue_rest(sub, wanted, sent)
        return True

    def _send_now(self, sub: _Subscriber, data: bytes) -> int | None:
        """Octets of `data` the subscriber's socket took now (0: none); None if the send
        failed and the subscriber is dropped."""
        try:
            return sub.sock.send(data, socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as error:
            self._disconnect(sub, f"send failed: {error.strerror or error}")
            return None

    def _queue_rest(self, sub: _Subscriber, frames: list[bytes], sent: int) -> None:
        """Queue what a send of `frames` joined left (`sent` octets went): the rest of the
        frame it stopped in, then each later frame while the queue is under sndhwm."""
        out = sub.out
        offset = 0
        for frame in frames:
            end = offset + len(frame)
            if end > sent:
                if offset < sent:
                    out.append(memoryview(frame)[sent - offset :])
                elif len(out) < self._hwm:
                    out.append(frame)
            offset = end
        self._wake()  # the thread pushes the rest once the socket takes it

    # ------------------------------------------------------------------ the thread

    def _new_peer(self, sock: socket.socket) -> _Subscriber:
        return _Subscriber(sock)

    def _accept_failed(self, error: OSError) -> None:
        log.warning("metadata publisher: accept failed: %s", error.strerror or error)

    def _received(self, sub: _Subscriber, chunks: list[bytes]) -> None:
        for chunk in chunks:
            sub.input += chunk
        try:
            self._parse(sub)
        except zmtp.ZmtpError as error:
            self._disconnect(sub, error.reason)
            return
        if len(sub.input) > MAX_INPUT_BYTES:
            self._disconnect(sub, f"more than {MAX_INPUT_BYTES} octets of input not understood")

    def _parse(self, sub: _Subscriber) -> None:
        """Consume what `sub.input` holds: greeting, READY, then subscriptions and commands."""
        data = sub.input
        offset = 0
        while True:
            if sub.state == _GREETING:
                if len(data) - offset < zmtp.GREETING_BYTES:
                    if len(data) - offset >= zmtp.SIGNATURE_BYTES:
                        zmtp.check_signature(data[offset:])
                    break
                greeting = zmtp.parse_greeting(data[offset : offset + zmtp.GREETING_BYTES])
                if greeting.mechanism != zmtp.NULL_MECHANISM:
                    raise zmtp.ZmtpError(f"peer uses the {greeting.mechanism} security mechanism, not NULL")
                offset += zmtp.GREETING_BYTES
                sub.state = _HANDSHAKE
                continue
            header = zmtp.parse_frame_header(data, offset, len(data))
            if header is None:
                break
            flags, size, header_bytes = header
            if len(data) - offset - header_bytes < size:
                break
            body = bytes(data[offset + header_bytes : offset + header_bytes + size])
            offset += header_bytes + size
            if sub.state == _HANDSHAKE:
                self._handshake(sub, flags, body)
            elif flags & zmtp.COMMAND:
                self._command(sub, body)
            elif body:
                self._subscription(sub, body[0], body[1:])
        del data[:offset]

    def _handshake(self, sub: _Subscriber, flags: int, body: bytes) -> None:
        if not flags & zmtp.COMMAND:
            raise zmtp.ZmtpError("peer sent a message before its READY command")
        zmtp.check_ready(body, OWN_TYPE)
        sub.state = _READY
        self._ready = [*self._ready, sub]

    def _command(self, sub: _Subscriber, body: bytes) -> None:
        name, data = zmtp.parse_command(body)
        if name == "SUBSCRIBE":
            self._subscription(sub, 1, bytes(data))
        elif name == "CANCEL":
            self._subscription(sub, 0, bytes(data))
        elif name == "PING":
            _ttl, context = zmtp.parse_ping(data)
            sub.out.append(zmtp.encode_pong(context))
            self._flush(sub)
        elif name == "ERROR":
            raise zmtp.ZmtpError(f"peer sent ERROR {zmtp.parse_error(data)!r}")

    @staticmethod
    def _subscription(sub: _Subscriber, kind: int, prefix: bytes) -> None:
        if kind == 1:
            sub.prefixes.append(prefix)
        elif kind == 0 and prefix in sub.prefixes:
            sub.prefixes.remove(prefix)
        sub.everything = b"" in sub.prefixes

    def _disconnect(self, sub: _Subscriber, reason: str, *, quiet: bool = False) -> None:
        if sub not in self._peers:
            return
        if quiet:
            log.debug("metadata publisher: subscriber %d: %s", sub.sock.fileno(), reason)
        else:
            log.warning("metadata publisher: dropping a subscriber: %s", reason)
        self._remove(sub)
