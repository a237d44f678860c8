"""The receiver's input sockets: N PULL (or SUB) sockets connected to one camera address.

The camera binds a PUSH socket; ZeroMQ deals its messages round-robin over the N
connections, so together they carry one stream, out of order across connections. One
thread polls the N sockets (`zmq.Poller`) and takes one message from each ready socket per
round with non-blocking zero-copy receives: the payload bytes are never copied here.
`pause(indices)` leaves sockets out of the polling (the receiver holds their next frame
back) until they are no longer listed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence, Sized
from typing import Literal, Protocol

import zmq

SocketType = Literal["pull", "sub"]
SOCKET_TYPES: tuple[SocketType, ...] = ("pull", "sub")

DEFAULT_RCVHWM = 20
"""Receive high-water mark per connection, in messages (20 x 2 MiB = 40 MiB at most)."""


class MessageSink(Protocol):
    """Where whole messages go (the receiver pipeline)."""

    def message(self, source: int, parts: Sequence[Sized], now: float) -> None:
        """A whole message received on connection `source`."""


class InputSocketError(Exception):
    """The input sockets cannot be set up (bad address, ...)."""


class InputSockets:
    """N sockets connected to `address`; `messages(timeout_ms)` yields what has arrived."""

    def __init__(
        self,
        address: str,
        connections: int,
        socket_type: SocketType = "pull",
        *,
        rcvhwm: int = DEFAULT_RCVHWM,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        if connections < 1:
            raise ValueError(f"connections must be >= 1, got {connections}")
        self.address = address
        self._context = context or zmq.Context.instance()
        self._sockets: list[zmq.Socket[bytes]] = []
        self._index: dict[zmq.Socket[bytes], int] = {}
        self._paused: frozenset[int] = frozenset()
        self._poller = zmq.Poller()
        kind = zmq.PULL if socket_type == "pull" else zmq.SUB
        try:
            for _ in range(connections):
                sock = self._context.socket(kind)
                self._sockets.append(sock)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RCVHWM, rcvhwm)
                if kind == zmq.SUB:
                    sock.setsockopt(zmq.SUBSCRIBE, b"")
                sock.connect(address)
                self._index[sock] = len(self._sockets) - 1
                self._poller.register(sock, zmq.POLLIN)
        except zmq.ZMQError as error:
            self.close()
            raise InputSocketError(f"cannot connect to {address}: {error.strerror}") from None

    @property
    def connections(self) -> int:
        """Number of sockets."""
        return len(self._sockets)

    def ready(self, timeout_ms: int) -> list[zmq.Socket[bytes]]:
        """The sockets (not paused) that have a message, waiting up to `timeout_ms` (0: just look)."""
        return [sock for sock, _event in self._poller.poll(timeout_ms)]

    def pause(self, indices: frozenset[int]) -> None:
        """Poll only the sockets whose index is not in `indices` (the others keep their queue)."""
        if indices == self._paused:
            return
        for index in self._paused - indices:
            self._poller.register(self._sockets[index], zmq.POLLIN)
        for index in indices - self._paused:
            self._poller.unregister(self._sockets[index])
        self._paused = indices

    @staticmethod
    def gather() -> bool:
        """No gathering pause on this path (False): libzmq's I/O thread wakes per message
        whatever the receive loop does."""
        return False

    def one_from_each(self, ready: list[zmq.Socket[bytes]]) -> Iterator[tuple[int, list[zmq.Frame]]]:
        """(connection index, message as zero-copy frames) from each ready socket, in order.

        Taking one message per connection per round keeps the connections in step, so
        frames leave the queues in about the order the camera dealt them.
        """
        index_of = self._index
        for sock in ready:
            try:
                first = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                continue
            parts = [first]
            more = first.more
            while more:  # the other parts of a multipart message are already here
                part = sock.recv(0, copy=False)
                parts.append(part)
                more = part.more
            yield index_of[sock], parts

    def receive(self, ready: list[zmq.Socket[bytes]], now: float, sink: MessageSink) -> None:
        """One message from each ready socket to `sink.message` (the value never placed)."""
        message = sink.message
        for source, parts in self.one_from_each(ready):
            message(source, parts, now)

    def close(self) -> None:
        """Close every socket (LINGER 0). Safe to call twice."""
        for sock in self._sockets:
            if not sock.closed:
                with contextlib.suppress(KeyError):
                    self._poller.unregister(sock)
                sock.close(linger=0)
