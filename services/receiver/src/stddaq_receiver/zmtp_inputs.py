"""The receiver's own ZMTP reader: N PULL connections to the camera's PUSH, without libzmq.

libzmq cannot receive into a caller's buffer: a frame is copied kernel -> message -> slot.
This reader speaks ZeroMQ's wire protocol itself (framing in stddaq_common.wire.zmtp) over
N plain TCP (or Unix) sockets and asks the sink where the image value goes
(`sink.place`): the value is received with `recv_into` straight into its ring slot, once.
The small parts (headers, timestamps) are read in batches into a per-connection buffer and
copied out as bytes; other large parts go into their own buffer.

Per round, each ready connection delivers at most one whole message (as the libzmq path
takes one message per socket per round). A paused connection is not read at all, so its
TCP window closes and the camera's PUSH deals to the others, as with a full RCVHWM.

Faults: a peer that breaks the protocol (bad greeting, flags, a command where none may be,
a part over the size limit) is counted in `protocol_errors`, logged with the peer and what
was wrong, and its connection dropped; every dropped or refused connection is attempted
again after a back-off (100 ms, doubling up to 1 s until a message has arrived, like
libzmq's reconnect interval with a maximum), and counted in `reconnects` once it was up.
PING (ZMTP 3.1) is answered with PONG; other commands are ignored.

Gathering: at low rates every message would be a wake-up of its own (here, and then in the
driver, writers and live stream, which the receive loop wakes per published image). So after
a round that received messages the loop calls `gather`: it waits up to GATHER_MAX_S in
the poller, with each connection's low-water mark raised to its gathering mark, so that the
messages that come meanwhile are read and published together. The pause is bounded by what
arrives, not by an assumed rate: it ends as soon as any connection holds GATHER_FILL of its
kernel receive buffer (SO_RCVBUF, read from the socket), or more than one whole message if
that is more (Linux's poll also reports a socket whose receive window is about to close,
whatever its mark), so a sender is not held back by it at any rate; a connection that
breaks or closes ends it too. It is skipped unless every connection is past its handshake
and between messages (no part or octet of a message in hand, nothing to send) and none is
paused. The marks are put back before the loop polls again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import ParamSpec, Protocol, TypeVar

import numpy as np

from stddaq_common.runtime.stats import Counter
from stddaq_common.wire import zmtp
from stddaq_common.wire.byte_views import BufferLike

log = logging.getLogger("stddaq.receiver")

BUFFER_BYTES = 512 * 1024
"""Per-connection buffer for the small parts (and commands)."""
SMALL_PART_MAX = 64 * 1024
"""Parts up to this size (other than the value) are copied out of the buffer as bytes."""
AFTER_LARGE_READ = 4096
"""Read size after a message with a large value: enough for the next message's headers,
little of its value (which then lands in its slot directly)."""
LARGE_VALUE = 256 * 1024
MAX_PARTS = 4096
"""Most parts a message may have."""
MAX_COMMAND_BYTES = 64 * 1024
LOWAT_MAX = 8 * 1024 * 1024
"""Largest receive low-water mark set while a large part arrives."""
STEADY_MARGIN = 64 * 1024
"""A connection whose last two messages (values placed in their slots) had sizes within
this of each other waits for a whole message at once: its low-water mark between messages
is the last size less this margin."""
LOWAT_SLACK = 4096
"""A steady connection keeps its low-water mark while the next one would differ by at most
this (far less than STEADY_MARGIN): no system call for a message a few octets longer."""
EXACT_SPAN = 64
"""A connection whose last two messages (values placed) were within this many octets of
each other on the wire (only the numbers in the main header change) waits for all of the
next one but TAIL_SLACK octets: woken once the last segment (the timestamp frame, which
the sender may write apart from the value) is in too."""
TAIL_SLACK = 10
"""Octets below the last message's wire size where an exact mark sits: covers a main
header some digits shorter, and stays below a trailing frame's size (a timestamp frame is
18 octets). A mark kept within EXACT_KEEP of the wanted one costs no system call."""
EXACT_KEEP = 4
STALL_S = 0.05
STALL_MAX_S = 0.5
"""A connection waiting for a whole message (raised low-water mark) that has delivered
nothing for twice its last interval between messages (at least STALL_S, at most
STALL_MAX_S) is looked at anyway: a smaller message would not reach the mark (until the
connection's next message pushes it over). Relative to the interval, so a steady stream
at any rate costs no look (a timer wake-up and a MSG_PEEK) per message."""
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 1.0
HANDSHAKE_TIMEOUT_S = 30.0
"""A peer that has not finished its greeting and READY by then is dropped (libzmq: 30 s)."""
OWN_TYPE = "PULL"
GATHER_MAX_S = 0.05
"""Longest gathering pause (a viewer or a stop sees no more delay than this; a live view
refreshes at 10-20 Hz). 25 ms cost 0.1 ms more CPU per image at 100 images/s."""
GATHER_FILL = 0.5
"""A gathering pause ends once a connection holds this part of its SO_RCVBUF (Linux counts
buffer overhead in SO_RCVBUF, so the part that holds payload may be about half of it; the
kernel also wakes a reader whose window is about to close, whatever its mark)."""


def gather_mark(rcvbuf: int, lowat: int, last_size: int) -> int:
    """The receive low-water mark of a connection during a gathering pause (0: no pause):
    GATHER_FILL of its SO_RCVBUF `rcvbuf`, and above both its mark between messages `lowat`
    and its last message's `last_size` octets with STEADY_MARGIN (one more whole message
    does not end the pause; two do)."""
    if rcvbuf <= 0:
        return 0
    return max(int(rcvbuf * GATHER_FILL), lowat + 1, last_size + STEADY_MARGIN)


_P = ParamSpec("_P")
_T = TypeVar("_T")
Part = bytes | memoryview

_DOWN, _CONNECTING, _GREETING, _HANDSHAKE, _TRAFFIC = range(5)
_POLL_IN = select.POLLIN | select.POLLERR | select.POLLHUP
_POLL_OUT = select.POLLOUT | select.POLLERR | select.POLLHUP
_long_size = struct.Struct(">Q").unpack_from
_SOL_SOCKET = socket.SOL_SOCKET
_SO_RCVLOWAT = socket.SO_RCVLOWAT
_PEEK_NOWAIT = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)
"""As a plain int: or-ing the flag enums costs three Python calls per look."""
_monotonic = time.monotonic


class MessageSink(Protocol):
    """Where messages go (the receiver pipeline)."""

    value_index: int
    """Index of the part `place` is asked about (-1: never)."""

    def place(self, source: int, heads: Sequence[BufferLike], nbytes: int, now: float) -> memoryview | None:
        """Writable buffer of exactly `nbytes` for the value part, or None."""

    def message(self, source: int, parts: Sequence[Part], now: float) -> None:
        """A whole message."""

    def abort(self, source: int, reason: str) -> None:
        """The message begun on `source` will never be whole."""


class ZmtpInputError(Exception):
    """The address cannot be read with the ZMTP reader."""


class _Broken(Exception):
    """The connection must be dropped (peer closed, or protocol error when `malformed`)."""

    def __init__(self, reason: str, malformed: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.malformed = malformed


def parse_address(address: str) -> tuple[int, str | tuple[str, int]]:
    """(address family, socket address) of a tcp://host:port or ipc://path address."""
    if address.startswith("ipc://"):
        return socket.AF_UNIX, address[len("ipc://") :]
    if not address.startswith("tcp://"):
        raise ZmtpInputError(f"the zmtp reader takes tcp:// or ipc:// addresses, not {address!r}")
    rest = address[len("tcp://") :]
    host, sep, port_text = rest.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ZmtpInputError(f"address {address!r} has no port (tcp://host:port)")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)
    except OSError as error:
        raise ZmtpInputError(f"cannot resolve {address!r}: {error}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


class _Connection:
    """One connection's socket, protocol state and buffer."""

    def __init__(self, index: int, address: str) -> None:
        self.index = index
        self.address = address
        self.sock: socket.socket | None = None
        self.state = _DOWN
        self.peer = "?"
        self.buffer = bytearray(BUFFER_BYTES)
        self.view = memoryview(self.buffer)
        self.start = 0
        self.end = 0
        self.read_size = BUFFER_BYTES
        self.parts: list[Part] = []
        self.body: memoryview | None = None
        """Destination of the large part being received, and how much of it is in."""
        self.filled = 0
        self.body_more = False
        self.out = b""
        self.peer_minor = 0
        self.next_attempt = 0.0
        self.backoff = RECONNECT_MIN_S
        self.deadline = 0.0
        self.was_up = False
        self.waiting = False
        """True when the buffer holds no whole frame and the socket had nothing more."""
        self.lowat = 1
        """The socket's SO_RCVLOWAT (octets that make it readable)."""
        self.last_size = 0
        """Octets of the parts of the last message delivered (0: none, or its value was not placed)."""
        self.placed = False
        """True when the value of the message being received went where the sink said."""
        self.message_bytes = 0
        """Octets of the message being received so far, on the wire (frame headers too)."""
        self.since = 0.0
        """When the connection last delivered a message or was looked at for a stall."""
        self.stall_after = STALL_S
        """How long after `since` a stall look is due (see STALL_MAX_S)."""
        self.rcvbuf = 0
        """The socket's SO_RCVBUF as last read (at the handshake and when the mark changes)."""

    def describe(self) -> str:
        return f"connection {self.index} to {self.address} (peer {self.peer})"


class ZmtpInputs:
    """N ZMTP PULL connections to one PUSH address; the interface of InputSockets."""

    def __init__(
        self,
        address: str,
        connections: int,
        *,
        max_part_bytes: int,
        protocol_errors: Counter | None = None,
        reconnects: Counter | None = None,
    ) -> None:
        if connections < 1:
            raise ValueError(f"connections must be >= 1, got {connections}")
        self.address = address
        self._family, self._sockaddr = parse_address(address)
        self._max_part = max_part_bytes
        self._protocol_errors = protocol_errors or Counter("protocol_errors", "")
        self._reconnects = reconnects or Counter("reconnects", "")
        self._conns = [_Connection(index, address) for index in range(connections)]
        self._by_fd: dict[int, _Connection] = {}
        self._poller = select.poll()
        self._paused: frozenset[int] = frozenset()
        self._greeting = zmtp.greeting(1) + zmtp.encode_ready(OWN_TYPE)
        self._next_look = 0.0
        """When `ready` must next look at every connection (a reconnect, a handshake deadline,
        a stall check); until then it only looks for messages already in a buffer."""
        now = time.monotonic()
        for conn in self._conns:
            self._connect(conn, now)

    @property
    def connections(self) -> int:
        """Number of connections."""
        return len(self._conns)

    @property
    def connected(self) -> int:
        """Connections past the handshake (messages can flow)."""
        return sum(conn.state == _TRAFFIC for conn in self._conns)

    # ---------------------------------------------------------------- polling

    def ready(self, timeout_ms: int) -> list[int]:
        """Indices of the connections (not paused) with something to do, waiting up to `timeout_ms`."""
        now = _monotonic()
        due: list[int] = []
        wake = now + timeout_ms / 1000
        if now >= self._next_look:
            wake = min(wake, self._look(now, due))
        else:
            wake = min(wake, self._next_look)
            paused = self._paused
            for conn in self._conns:  # a whole message may be in its buffer already
                if (conn.end > conn.start and not conn.waiting and conn.body is None
                        and conn.state == _TRAFFIC and conn.index not in paused):
                    due.append(conn.index)
        wait_ms = 0 if due else max(0, int((wake - now) * 1000 + 0.999))
        events = self._poller.poll(wait_ms)
        by_fd = self._by_fd
        for fd, event in events:
            polled = by_fd.get(fd)
            if polled is None:
                continue
            conn = polled
            if conn.state == _CONNECTING:
                self._connected(conn, _monotonic())
                continue
            if event & select.POLLOUT and conn.out:
                self._flush(conn)
            if event & _POLL_IN and conn.index not in due:
                due.append(conn.index)
        return due

    def _look(self, now: float, due: list[int]) -> float:
        """Look at every connection: reconnect, drop a stuck handshake, list what is due
        (a buffered message, or a stalled one); returns the next time a look is needed."""
        paused = self._paused
        soonest = math.inf
        for conn in self._conns:
            state = conn.state
            if state == _DOWN:
                if now >= conn.next_attempt:
                    self._connect(conn, now)
            elif state != _CONNECTING and state != _TRAFFIC:
                if now >= conn.deadline:
                    self._drop(conn, f"no ZMTP handshake within {HANDSHAKE_TIMEOUT_S:.0f} s", True, now)
            elif state == _TRAFFIC and conn.index not in paused and conn.body is None:
                if not conn.waiting and conn.end > conn.start:
                    due.append(conn.index)  # a message may be whole in its buffer
                elif conn.lowat > 1 and not conn.parts and now - conn.since >= conn.stall_after:
                    conn.since = now
                    if self._has_input(conn):  # a message smaller than the mark
                        due.append(conn.index)
            when = self._look_due(conn)
            if when < soonest:
                soonest = when
        self._next_look = soonest
        return soonest

    def _look_due(self, conn: _Connection) -> float:
        """When `conn` next needs a look (inf: never until its state changes)."""
        state = conn.state
        if state == _DOWN:
            return conn.next_attempt
        if state in (_GREETING, _HANDSHAKE):
            return conn.deadline
        if (state == _TRAFFIC and conn.lowat > 1 and not conn.parts and conn.body is None
                and conn.index not in self._paused):
            return conn.since + conn.stall_after
        return math.inf

    def _look_by(self, when: float) -> None:
        """Make sure `ready` looks at every connection no later than `when`."""
        if when < self._next_look:
            self._next_look = when

    @staticmethod
    def _has_input(conn: _Connection) -> bool:
        """True if the socket holds anything to read (or an end or error to report)."""
        assert conn.sock is not None
        try:
            conn.sock.recv(1, _PEEK_NOWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True  # reading it reports the error
        return True

    def gather(self, seconds: float = GATHER_MAX_S) -> bool:
        """Pause up to `seconds` so that the next messages come together (module text);
        returns at once (False) when a pause is not allowed now or anything is readable."""
        if self._paused:
            return False
        marks: list[tuple[socket.socket, int, int]] = []
        for conn in self._conns:
            sock = conn.sock
            if (sock is None or conn.state != _TRAFFIC or conn.parts or conn.body is not None
                    or conn.end > conn.start or conn.out):
                return False
            mark = gather_mark(conn.rcvbuf, conn.lowat, conn.last_size)
            if not mark:
                return False
            marks.append((sock, mark, conn.lowat))
        if self._poller.poll(0):
            return False  # a message (or an end) is there already: read it first
        raised: list[tuple[socket.socket, int]] = []
        try:
            for sock, mark, lowat in marks:
                sock.setsockopt(_SOL_SOCKET, _SO_RCVLOWAT, mark)
                raised.append((sock, lowat))
            self._poller.poll(max(1, int(seconds * 1000)))
        except OSError:
            return False  # no pause then; the marks are put back below
        finally:
            for sock, lowat in raised:
                try:
                    sock.setsockopt(_SOL_SOCKET, _SO_RCVLOWAT, lowat)
                except OSError:  # then that connection wakes the loop at another mark: still right
                    continue
        return True

    def pause(self, indices: frozenset[int]) -> None:
        """Read only the connections whose index is not in `indices`."""
        if indices == self._paused:
            return
        self._paused = indices
        self._next_look = 0.0  # a connection read again may be due a stall check
        for conn in self._conns:
            self._register(conn)

    def receive(self, ready: list[int], now: float, sink: MessageSink) -> None:
        """Let each ready connection deliver at most one whole message (or handshake, or
        part of a large value) to `sink`."""
        conns = self._conns
        for index in ready:
            conn = conns[index]
            if conn.sock is None:
                continue
            try:
                if conn.state == _TRAFFIC:
                    self._traffic(conn, sink, now)
                else:
                    self._handshake(conn, now)
            except _Broken as broken:
                if conn.parts or conn.body is not None:
                    sink.abort(index, f"{conn.describe()} broke mid-message: {broken.reason}")
                self._drop(conn, broken.reason, broken.malformed, now)

    def close(self) -> None:
        """Close every connection. Safe to call twice."""
        for conn in self._conns:
            self._close_socket(conn)
            conn.state = _DOWN

    # ---------------------------------------------------------------- connection life

    def _register(self, conn: _Connection) -> None:
        sock = conn.sock
        if sock is None:
            return
        fd = sock.fileno()
        mask = 0
        if conn.state == _CONNECTING or conn.out:
            mask |= _POLL_OUT
        if conn.state != _CONNECTING and conn.index not in self._paused:
            mask |= _POLL_IN
        if mask:
            self._poller.register(fd, mask)  # register() also modifies
        else:
            with contextlib.suppress(KeyError):
                self._poller.unregister(fd)

    def _connect(self, conn: _Connection, now: float) -> None:
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        sock.setblocking(False)
        if self._family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(self._sockaddr)
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            sock.close()
            self._retry_later(conn, now)
            return
        conn.sock = sock
        conn.lowat = 1
        conn.rcvbuf = 0
        conn.last_size = 0
        conn.placed = False
        conn.state = _CONNECTING
        conn.deadline = now + HANDSHAKE_TIMEOUT_S
        conn.message_bytes = 0
        self._by_fd[sock.fileno()] = conn
        self._register(conn)

    def _connected(self, conn: _Connection, now: float) -> None:
        sock = conn.sock
        assert sock is not None
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._close_socket(conn)
            self._retry_later(conn, now)
            return
        try:
            name = sock.getpeername()
            conn.peer = f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name or self.address)
        except OSError:
            conn.peer = "?"
        conn.state = _GREETING
        self._look_by(conn.deadline)
        conn.start = conn.end = 0
        conn.read_size = BUFFER_BYTES
        conn.out = self._greeting
        self._flush(conn)
        self._register(conn)

    def _retry_later(self, conn: _Connection, now: float) -> None:
        conn.state = _DOWN
        conn.next_attempt = now + conn.backoff
        conn.backoff = min(conn.backoff * 2, RECONNECT_MAX_S)
        self._look_by(conn.next_attempt)

    def _close_socket(self, conn: _Connection) -> None:
        sock = conn.sock
        if sock is None:
            return
        fd = sock.fileno()
        self._by_fd.pop(fd, None)
        with contextlib.suppress(KeyError):
            self._poller.unregister(fd)
        sock.close()
        conn.sock = None
        conn.parts = []
        conn.body = None
        conn.message_bytes = 0
        conn.out = b""

    def _drop(self, conn: _Connection, reason: str, malformed: bool, now: float) -> None:
        if malformed:
            self._protocol_errors.value += 1
            log.warning("%s: %s; dropping the connection and connecting again", conn.describe(), reason)
        else:
            log.info("%s: %s; connecting again", conn.describe(), reason)
        if conn.was_up:
            self._reconnects.value += 1
        conn.was_up = False
        self._close_socket(conn)
        self._retry_later(conn, now)

    def _flush(self, conn: _Connection) -> None:
        sock = conn.sock
        if sock is None or not conn.out:
            return
        try:
            sent = sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the next read finds the connection broken
        conn.out = conn.out[sent:]
        self._register(conn)

    # ---------------------------------------------------------------- reading

    def _fill(self, conn: _Connection, need: int) -> bool:
        """Read once into the buffer (making room for `need` octets); False if nothing came now
        (the connection then waits for the poller)."""
        if conn.start == conn.end:
            conn.start = conn.end = 0
        elif BUFFER_BYTES - conn.end < max(need, AFTER_LARGE_READ):
            remaining = conn.end - conn.start
            conn.view[:remaining] = conn.view[conn.start : conn.end]
            conn.start, conn.end = 0, remaining
        room = min(BUFFER_BYTES - conn.end, max(conn.read_size, need))
        assert conn.sock is not None
        try:
            got = conn.sock.recv_into(conn.view[conn.end : conn.end + room])
        except (BlockingIOError, InterruptedError):
            conn.waiting = True
            if conn.lowat != 1 and conn.parts:  # the rest of this message may be small
                self._set_lowat(conn, 1)
            return False
        except OSError as error:
            raise _Broken(f"connection lost: {error.strerror or error}", False) from None
        if got == 0:
            raise _Broken("the peer closed the connection", False)
        conn.end += got
        conn.waiting = False
        return True

    def _handshake(self, conn: _Connection, now: float) -> None:
        """Greeting, then the peer's READY (commands before it are protocol errors)."""
        while True:
            if conn.state == _GREETING:
                start = conn.start
                if conn.end - start < zmtp.GREETING_BYTES:
                    if conn.end - start >= zmtp.SIGNATURE_BYTES:
                        self._check(zmtp.check_signature, conn.view[start : conn.end])
                    if not self._fill(conn, zmtp.GREETING_BYTES):
                        return
                    continue
                greeting = self._check(zmtp.parse_greeting, conn.view[start : start + zmtp.GREETING_BYTES])
                if greeting.mechanism != zmtp.NULL_MECHANISM:
                    raise _Broken(f"peer uses the {greeting.mechanism} security mechanism, not NULL", True)
                conn.peer_minor = greeting.minor if greeting.major == 3 else 1
                conn.start += zmtp.GREETING_BYTES
                conn.state = _HANDSHAKE
            frame = self._buffered_frame(conn, MAX_COMMAND_BYTES)
            if frame is None:
                if not self._fill(conn, 0):
                    return
                continue
            flags, body = frame
            if not flags & zmtp.COMMAND:
                raise _Broken("peer sent a message before its READY command", True)
            self._check(zmtp.check_ready, body, OWN_TYPE)
            conn.state = _TRAFFIC
            conn.was_up = True
            self._read_rcvbuf(conn)
            log.info("%s: ZMTP 3.%d peer ready", conn.describe(), conn.peer_minor)
            return

    def _buffered_frame(self, conn: _Connection, limit: int) -> tuple[int, memoryview] | None:
        """The next whole frame in the buffer (flags, body view), consuming it; None if not all in."""
        header = self._check(zmtp.parse_frame_header, conn.view, conn.start, conn.end)
        if header is None:
            return None
        flags, size, header_bytes = header
        if size > limit:
            raise _Broken(f"frame of {size} octets where at most {limit} are allowed", True)
        begin = conn.start + header_bytes
        if conn.end - begin < size:
            return None
        conn.start = begin + size
        return flags, conn.view[begin : begin + size]

    def _traffic(self, conn: _Connection, sink: MessageSink, now: float) -> None:
        """Deliver at most one whole message of this connection to the sink.

        Data frames whose header is in the buffer are parsed here, inline (the per-message
        path); commands, bad flags and headers not all in go through zmtp.parse_frame_header.
        """
        view = conn.view
        value_index = sink.value_index
        while True:
            body = conn.body
            if body is not None:  # a large part: straight into its destination
                if not self._receive_body(conn, body):
                    return
                conn.parts.append(body)
                conn.body = None
                if not conn.body_more:
                    self._deliver(conn, sink, now)
                    return
                continue
            start = conn.start
            end = conn.end
            if start == end:  # nothing in hand (the usual start of a message): read
                if not self._fill(conn, 0):
                    return
                continue
            flags = view[start] if end - start >= zmtp.SHORT_HEADER_BYTES else 0xFF
            if flags <= zmtp.MORE:  # a short data frame (flags 0 or MORE)
                size = view[start + 1]
                begin = start + zmtp.SHORT_HEADER_BYTES
            elif (flags <= zmtp.MORE | zmtp.LONG and end - start >= zmtp.LONG_HEADER_BYTES
                  and (size := _long_size(view, start + 1)[0]) <= zmtp.MAX_BODY):
                begin = start + zmtp.LONG_HEADER_BYTES
            else:
                try:
                    header = zmtp.parse_frame_header(view, start, end)
                except zmtp.ZmtpError as error:
                    raise _Broken(error.reason, True) from None
                if header is None:
                    if not self._fill(conn, zmtp.LONG_HEADER_BYTES):
                        return
                    continue
                flags, size, header_bytes = header
                begin = start + header_bytes
                if flags & zmtp.COMMAND:
                    if size > MAX_COMMAND_BYTES:
                        raise _Broken(f"command frame of {size} octets (at most {MAX_COMMAND_BYTES})", True)
                    if end - begin < size:
                        if not self._fill(conn, header_bytes + size):
                            return
                        continue
                    conn.start = begin + size
                    self._command(conn, view[begin : begin + size])
                    continue
            parts = conn.parts
            index = len(parts)
            if index == value_index or size > SMALL_PART_MAX:
                if size > self._max_part:
                    raise _Broken(f"message part of {size} octets (at most {self._max_part})", True)
                destination = sink.place(conn.index, parts, size, now) if index == value_index else None
                if destination is None:
                    destination = np.empty(size, np.uint8).data
                else:
                    conn.placed = True
                have = min(end - begin, size)
                if have:
                    destination[:have] = view[begin : begin + have]
                conn.start = begin + have
                conn.message_bytes += begin - start + size
                conn.read_size = AFTER_LARGE_READ if size >= LARGE_VALUE else BUFFER_BYTES
                if have < size:
                    conn.body, conn.filled, conn.body_more = destination, have, bool(flags & zmtp.MORE)
                    continue
                parts.append(destination)
            else:
                stop = begin + size
                if stop > end:
                    if not self._fill(conn, stop - start):
                        return
                    continue
                parts.append(bytes(view[begin:stop]))
                conn.start = stop
                conn.message_bytes += stop - start
            if not flags & zmtp.MORE:
                self._deliver(conn, sink, now)
                return
            if len(parts) >= MAX_PARTS:
                raise _Broken(f"message of more than {MAX_PARTS} parts", True)

    def _receive_body(self, conn: _Connection, body: memoryview) -> bool:
        """Receive the rest of a large part where it goes; True when it is complete.

        One scatter read takes the rest of the part into its destination and the octets
        after it (the next parts' headers) into the buffer. While a part is incomplete the
        socket's receive low-water mark is the rest (at most LOWAT_MAX): the poller wakes
        the loop only when that much is in, so a 2 MiB value takes one or two reads.
        """
        sock = conn.sock
        assert sock is not None
        size = len(body)
        filled = conn.filled
        if conn.start == conn.end:
            conn.start = conn.end = 0
        end = conn.end
        tail = min(AFTER_LARGE_READ, BUFFER_BYTES - end)
        try:  # the rest of the part into its place, what follows it into the buffer
            got = sock.recvmsg_into((body[filled:], conn.view[end : end + tail]))[0]
        except (BlockingIOError, InterruptedError):
            got = -1
        except OSError as error:
            raise _Broken(f"connection lost: {error.strerror or error}", False) from None
        if got == 0:
            raise _Broken("the peer closed the connection", False)
        if got > 0:
            rest = size - filled
            if got > rest:
                conn.end = end + got - rest
                conn.waiting = False
                got = rest
            filled += got
            conn.filled = filled
        if filled == size:
            return True  # the low-water mark is set again when the message is delivered
        lowat = min(size - filled, LOWAT_MAX)
        if lowat != conn.lowat:
            self._set_lowat(conn, lowat)
        return False

    @classmethod
    def _set_lowat(cls, conn: _Connection, lowat: int) -> None:
        assert conn.sock is not None
        try:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
        except OSError:
            return  # then the poller wakes for every segment: slower, still right
        conn.lowat = lowat
        cls._read_rcvbuf(conn)  # a raised mark makes the kernel grow the buffer

    @staticmethod
    def _read_rcvbuf(conn: _Connection) -> None:
        """Keep the socket's SO_RCVBUF (0 if it cannot be read: then no gather pause)."""
        assert conn.sock is not None
        try:
            conn.rcvbuf = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except OSError:
            conn.rcvbuf = 0

    def _deliver(self, conn: _Connection, sink: MessageSink, now: float) -> None:
        """Hand the whole message to the sink, after setting the low-water mark for the next:
        about a whole message when the last two had their values placed and about the same
        size (a steady stream: one wake-up per message), else 1."""
        parts = conn.parts
        conn.parts = []
        conn.backoff = RECONNECT_MIN_S  # a peer that delivers is a good one: reconnect soon
        stall = 2 * (now - conn.since)
        conn.stall_after = STALL_S if stall < STALL_S else STALL_MAX_S if stall > STALL_MAX_S else stall
        conn.since = now
        size = conn.message_bytes if conn.placed else 0
        conn.message_bytes = 0
        conn.placed = False
        change = size - conn.last_size
        conn.last_size = size
        current = conn.lowat
        if size >= LARGE_VALUE and -STEADY_MARGIN <= change <= STEADY_MARGIN:
            if -EXACT_SPAN <= change <= EXACT_SPAN:
                lowat = size - TAIL_SLACK if size - TAIL_SLACK < LOWAT_MAX else LOWAT_MAX
                if not -EXACT_KEEP <= lowat - current <= EXACT_KEEP:
                    self._set_lowat(conn, lowat)
            else:
                lowat = size - STEADY_MARGIN if size - STEADY_MARGIN < LOWAT_MAX else LOWAT_MAX
                if current <= 1 or not -LOWAT_SLACK <= lowat - current <= LOWAT_SLACK:
                    self._set_lowat(conn, lowat)
            look = now + conn.stall_after
            if look < self._next_look:
                self._next_look = look
        elif current != 1:
            self._set_lowat(conn, 1)
        sink.message(conn.index, parts, now)

    def _command(self, conn: _Connection, body: memoryview) -> None:
        name, data = self._check(zmtp.parse_command, body)
        if name == "PING":
            if conn.peer_minor >= 1:
                _ttl, context = self._check(zmtp.parse_ping, data)
                conn.out += zmtp.encode_pong(context)
                self._flush(conn)
        elif name == "ERROR":
            raise _Broken(f"peer sent ERROR {zmtp.parse_error(data)!r}", True)
        else:
            log.debug("%s: ignoring the %s command", conn.describe(), name)

    @staticmethod
    def _check(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Call a zmtp parser; its ZmtpError becomes a malformed-peer _Broken."""
        try:
            return function(*args, **kwargs)
        except zmtp.ZmtpError as error:
            raise _Broken(error.reason, True) from None
