"""The viewers' socket: an XPUB bound at the live-stream TCP address, never blocking.

- Each image is one multipart message sent with NOBLOCK. ZeroMQ's PUB semantics drop a
  message for a viewer whose queue holds `send_hwm` images already, and only for that
  viewer: a stalled viewer never blocks the stream nor the other viewers, and its queue
  (the memory it can cost) stays at `send_hwm` images. When it reads again it gets the
  images sent after its queue drained, i.e. the newest ones win.
- An XPUB rather than a PUB so the stream learns how many subscriptions there are (with
  XPUB_VERBOSER every subscribe and unsubscribe, including a disconnect, is passed up):
  with no viewer, images are not copied out of the ring at all. The count may only
  over-count (a viewer that subscribes twice), which costs work, never images.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast

import zmq

from stddaq_common.bus.pinned_send import PinnedBuffer, PinnedSender
from stddaq_common.runtime.runner import StartupError

SUBSCRIBE = 1
UNSUBSCRIBE = 0
REBIND_WAIT_S = 5.0
"""After a reset, how long the address may stay busy while ZeroMQ closes the old socket."""

Part = bytes | zmq.Frame | PinnedBuffer
"""A message part: bytes (copied), a pyzmq Frame, or memory libzmq sends as is."""


class ViewerSocket:
    """Binds an XPUB socket for viewers and sends multipart messages without blocking."""

    def __init__(self, address: str, *, send_hwm: int) -> None:
        self.address = address
        self.send_hwm = send_hwm
        self.subscriptions = 0
        """Current number of subscriptions (viewers, usually one each)."""
        self.refused = 0
        """Messages the socket refused with EAGAIN (nothing of them was sent)."""
        try:
            self._socket = self._bound_socket()
        except zmq.ZMQError as error:
            raise StartupError(f"cannot bind the live stream at {address}: {error.strerror}") from None
        self._pinned = PinnedSender(self._socket)

    def _bound_socket(self) -> zmq.Socket[bytes]:
        socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.XPUB)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDHWM, self.send_hwm)
            socket.setsockopt(zmq.XPUB_VERBOSER, 1)
            socket.bind(self.address)
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        return socket

    def reset(self) -> None:
        """Drop every queued message: close the socket (LINGER 0) and bind a new one.

        Viewers reconnect and subscribe again by themselves (ZeroMQ's reconnect); until
        then the stream counts no viewer. Raises ZMQError if the address stays busy.
        """
        self._socket.close(linger=0)
        self.subscriptions = 0
        deadline = time.monotonic() + REBIND_WAIT_S
        while True:
            try:
                self._socket = self._bound_socket()
                self._pinned = PinnedSender(self._socket)
                return
            except zmq.ZMQError as error:
                if error.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    @property
    def has_viewers(self) -> bool:
        """True if at least one viewer is subscribed."""
        return self.subscriptions > 0

    def poll_subscriptions(self) -> None:
        """Take in the (un)subscriptions viewers sent since the last call; never blocks."""
        socket = self._socket
        while cast(int, socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                message = socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not message:
                continue
            if message[0] == SUBSCRIBE:
                self.subscriptions += 1
            elif message[0] == UNSUBSCRIBE and self.subscriptions > 0:
                self.subscriptions -= 1

    def send(self, parts: Sequence[Part]) -> bool:
        """Queue one multipart message for every viewer; False if ZeroMQ refused it."""
        last = len(parts) - 1
        try:
            self._send_part(parts[0], zmq.NOBLOCK | (zmq.SNDMORE if last else 0))
        except zmq.Again:
            self.refused += 1
            return False
        # Once the first part is accepted, ZeroMQ accepts the rest of the message.
        for index in range(1, last + 1):
            self._send_part(parts[index], zmq.NOBLOCK | (zmq.SNDMORE if index < last else 0))
        return True

    def send_from_slot(self, header: bytes, address: int, nbytes: int) -> bool:
        """Queue [header, the `nbytes` at `address`] for every viewer, the second part
        tracked (stddaq_common.bus.pinned_send); False if ZeroMQ refused it. Only where
        `native_slots` is True."""
        if self._pinned.send_after_header(header, address, nbytes):
            return True
        self.refused += 1
        return False

    @property
    def native_slots(self) -> bool:
        """True if `send_from_slot` is available (libzmq's C functions are reachable)."""
        return self._pinned.native

    def _send_part(self, part: Part, flags: int) -> None:
        if isinstance(part, PinnedBuffer):
            self._pinned.send(part, flags)
        else:
            self._socket.send(part, flags)

    def close(self) -> None:
        """Close the socket (LINGER 0: queued images are discarded). Safe to call twice."""
        if not self._socket.closed:
            self._socket.close(linger=0)
