"""The driver -> writer command channel's two ends, own ZMTP or libzmq (docs/driver-writer-protocol.md).

The driver binds a PUSH at `<D>-driver-<k>`, writer k connects a PULL to it. By default
both ends speak ZeroMQ's wire protocol themselves on ipc:// paths (bus.zmtp_push,
bus.zmtp_pull): a command costs one send in the driver's thread and one wake-up of the
writer's thread, no libzmq I/O thread on either side. libzmq's sockets are the fallback:
`STDDAQ_COMMAND_TRANSPORT=libzmq`, tcp:// and abstract (ipc://@name) addresses, and on the
writer's side a driver that greets with ZMTP 2 (ZeroMQ 3.x). Either end talks to a libzmq
peer (std_daq's C++ driver and writer) unchanged.

Both ends have one small interface: `CommandPush.send(payload, timeout_s) -> bool` (False:
no writer took it within the timeout) and `CommandPull.receive(timeout_ms)` (the next
message's parts, or None).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import zmq

from stddaq_common.bus.transport import LIBZMQ, ZMTP, choose_transport
from stddaq_common.bus.zmtp_pull import ZmtpPull
from stddaq_common.bus.zmtp_push import ZmtpPush
from stddaq_common.bus.zmtp_reader import PeerNotSpoken, unix_path_of

log = logging.getLogger(__name__)

TRANSPORT_ENV = "STDDAQ_COMMAND_TRANSPORT"
"""Environment variable that chooses the command channel's transport: zmtp or libzmq."""


class CommandPush(Protocol):
    """The driver's end for one writer."""

    transport: str

    def send(self, payload: bytes, timeout_s: float) -> bool:
        """Send one single-part message, waiting up to `timeout_s` (0: not at all) for a
        writer to take it; False if none did (nothing was sent)."""

    def close(self) -> None:
        """Close the socket (queued messages are discarded)."""


class CommandPull(Protocol):
    """Writer k's end."""

    transport: str

    def receive(self, timeout_ms: int) -> list[bytes] | None:
        """The next message's parts, waiting up to `timeout_ms`; None if none came."""

    def close(self) -> None:
        """Close the socket."""


def _libzmq_socket(
    context: zmq.Context[zmq.Socket[bytes]], kind: int, hwm_option: int, hwm: int
) -> zmq.Socket[bytes]:
    """A libzmq socket of `kind` with LINGER 0 and its high-water mark `hwm_option` set."""
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(hwm_option, hwm)
    return sock


class LibzmqPush:
    """libzmq's PUSH (LINGER 0, SNDHWM `sndhwm`) bound at `address`."""

    transport = LIBZMQ

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], address: str, sndhwm: int) -> None:
        push = _libzmq_socket(context, zmq.PUSH, zmq.SNDHWM, sndhwm)
        try:
            push.bind(address)
        except zmq.ZMQError:
            push.close(linger=0)
            raise
        self._push = push

    def send(self, payload: bytes, timeout_s: float) -> bool:
        """See CommandPush.send."""
        push = self._push
        try:
            push.send(payload, zmq.NOBLOCK)
            return True
        except zmq.Again:
            if timeout_s <= 0:
                return False
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not push.poll(left_ms, zmq.POLLOUT):
                return False
            try:
                push.send(payload, zmq.NOBLOCK)
                return True
            except zmq.Again:
                continue

    def close(self) -> None:
        """See CommandPush.close."""
        self._push.close(linger=0)


def bind_command_push(
    context: zmq.Context[zmq.Socket[bytes]],
    address: str,
    sndhwm: int,
    *,
    name: str = "commands",
    transport: str | None = None,
) -> CommandPush:
    """The driver's PUSH bound at `address` (and the writer's answer PUSH): the own
    ZmtpPush (its `send` is CommandPush.send) or libzmq's; OSError or zmq.ZMQError if it
    cannot bind."""
    if choose_transport(address, transport, TRANSPORT_ENV, abstract_ok=False) == ZMTP:
        return ZmtpPush(unix_path_of(address), sndhwm=sndhwm, name=name)
    return LibzmqPush(context, address, sndhwm)


class LibzmqPull:
    """libzmq's PULL (LINGER 0) connected to `address`."""

    transport = LIBZMQ

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], address: str, rcvhwm: int) -> None:
        pull = _libzmq_socket(context, zmq.PULL, zmq.RCVHWM, rcvhwm)
        pull.connect(address)
        self._pull = pull
        self._timeout_ms = -1
        """The receive timeout set on the socket (-1: none yet)."""

    def receive(self, timeout_ms: int) -> list[bytes] | None:
        """One blocking receive with the socket's RCVTIMEO (no separate poll: that costs
        more than the receive itself); a frame without more parts, the usual message,
        becomes a one-element list without asking the socket for RCVMORE."""
        pull = self._pull
        if timeout_ms != self._timeout_ms:
            pull.setsockopt(zmq.RCVTIMEO, timeout_ms)
            self._timeout_ms = timeout_ms
        try:
            frame = pull.recv(copy=False)
        except zmq.Again:
            return None
        parts = [frame.bytes]
        while frame.more:
            frame = pull.recv(copy=False)
            parts.append(frame.bytes)
        return parts

    def close(self) -> None:
        """See CommandPull.close."""
        self._pull.close(linger=0)


class OwnPull:
    """The own ZMTP PULL (bus.zmtp_pull); switches to libzmq for a ZMTP 2 driver."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], address: str, rcvhwm: int) -> None:
        self._context = context
        self._address = address
        self._rcvhwm = rcvhwm
        self.transport = ZMTP
        self.reader: ZmtpPull | None = ZmtpPull(address)
        self._fallback: LibzmqPull | None = None

    def receive(self, timeout_ms: int) -> list[bytes] | None:
        """See CommandPull.receive."""
        reader = self.reader
        if reader is None:
            assert self._fallback is not None
            return self._fallback.receive(timeout_ms)
        try:
            got = reader.receive(timeout_ms, 1)
        except PeerNotSpoken as error:
            log.warning("commands from %s: %s; receiving through libzmq instead", self._address, error)
            reader.close()
            self.reader = None
            self.transport = LIBZMQ
            self._fallback = LibzmqPull(self._context, self._address, self._rcvhwm)
            return self._fallback.receive(timeout_ms)
        if not got:
            return None
        message = got[0]
        return [message] if type(message) is bytes else message  # type: ignore[return-value]

    def close(self) -> None:
        """See CommandPull.close."""
        if self.reader is not None:
            self.reader.close()
        if self._fallback is not None:
            self._fallback.close()


def connect_command_pull(
    context: zmq.Context[zmq.Socket[bytes]],
    address: str,
    rcvhwm: int,
    *,
    transport: str | None = None,
) -> CommandPull:
    """Writer k's PULL connected to the driver's `address`."""
    if choose_transport(address, transport, TRANSPORT_ENV) == ZMTP:
        return OwnPull(context, address, rcvhwm)
    return LibzmqPull(context, address, rcvhwm)


__all__ = [
    "TRANSPORT_ENV",
    "CommandPull",
    "CommandPush",
    "LibzmqPull",
    "LibzmqPush",
    "OwnPull",
    "bind_command_push",
    "connect_command_pull",
]
