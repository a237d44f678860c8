"""The fake camera's send loop: bind a PUSH (or PUB) socket and send the planned messages.

Like a PCO camera server, it binds a PUSH socket; ZeroMQ deals the messages round-robin
over the receiver's connections. A PUSH socket blocks (here: waits, stoppable) while no
receiver is connected or all connections are full, so no message is ever dropped by the
camera itself. A PUB socket (for `-t sub` receivers) drops what no subscriber can take,
as a PUB camera does. Frame values are sent zero-copy: prepared frames as libzmq constant
messages (stddaq_common.bus.pinned_send: no copy and no pyzmq garbage-collector round trip
per frame), anything else through pyzmq's zero-copy path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import zmq

from stddaq_common.bus.pinned_send import PinnedBuffer, PinnedSender
from stddaq_fake_camera.messages import MessageMaker, WirePart
from stddaq_fake_camera.schedule import SendKind

log = logging.getLogger("stddaq.fake_camera")

_WAIT_SLICE_S = 0.05
"""Longest single wait, so a stop request is noticed quickly."""


class StopFlag:
    """Whether the camera should stop: the runner's stop Event, set on SIGTERM/SIGINT."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event if event is not None else threading.Event()

    @property
    def requested(self) -> bool:
        """True once a stop was requested."""
        return self.event.is_set()


@dataclass(slots=True)
class SendCounts:
    """What the camera sent."""

    messages: int = 0
    bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _message_bytes(parts: list[WirePart]) -> int:
    total = 0
    for part in parts:
        if isinstance(part, bytes):
            total += len(part)
        elif isinstance(part, PinnedBuffer):
            total += part.nbytes
        else:
            total += memoryview(part).nbytes  # type: ignore[arg-type]
    return total


class FakeCamera:
    """A bound PUSH socket and the loop that sends the planned messages at a given rate."""

    def __init__(
        self, address: str, maker: MessageMaker, *, sndhwm: int = 10, socket_type: str = "push"
    ) -> None:
        self.maker = maker
        self._context = zmq.Context()
        kind = zmq.PUB if socket_type == "pub" else zmq.PUSH
        self._socket: zmq.Socket[bytes] = self._context.socket(kind)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm)
        try:
            self._socket.bind(address)
        except zmq.ZMQError as error:
            self._socket.close(linger=0)
            self._context.term()
            raise ValueError(f"cannot bind {address}: {error.strerror}") from None
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pinned = PinnedSender(self._socket)

    def run(
        self,
        plan: Iterable[tuple[int, SendKind]],
        rate_hz: float,
        stop: StopFlag,
        restart_pause_s: float = 0.0,
    ) -> SendCounts:
        """Send every planned message (at `rate_hz`, 0 = as fast as possible) until done or
        stopped; at a planned restart, pause `restart_pause_s` seconds."""
        counts = SendCounts()
        interval = 1.0 / rate_hz if rate_hz > 0 else 0.0
        began = start = time.perf_counter()
        index = 0
        wire_parts = self.maker.wire_parts
        send = self._send
        wait_until = self._wait_until
        by_kind: dict[SendKind, int] = {}
        for pulse_id, kind in plan:
            if kind is SendKind.RESTART:
                if not wait_until(time.perf_counter() + restart_pause_s, stop):
                    break
                start, index = time.perf_counter(), 0
                continue
            if interval and not wait_until(start + index * interval, stop):
                break
            index += 1
            parts = wire_parts(pulse_id, kind, divmod(time.time_ns(), 1_000_000_000))
            if not send(parts, stop):
                break
            counts.messages += 1
            counts.bytes += _message_bytes(parts)
            by_kind[kind] = by_kind.get(kind, 0) + 1
        counts.by_kind = {kind.value: count for kind, count in by_kind.items()}
        counts.seconds = time.perf_counter() - began
        return counts

    def _send(self, parts: list[WirePart], stop: StopFlag) -> bool:
        """Send one message, waiting while no receiver can take it; False if stopped.

        Once ZeroMQ accepts the first part it accepts the rest of the message (the send
        queue counts whole messages), so only the first part is sent without blocking."""
        sock = self._socket
        last = len(parts) - 1
        more = zmq.SNDMORE if last else 0
        while True:
            if stop.requested:
                return False
            try:
                self._send_part(parts[0], zmq.NOBLOCK | more)
                break
            except zmq.Again:
                sock.poll(int(_WAIT_SLICE_S * 1000), zmq.POLLOUT)
        for index in range(1, last + 1):
            self._send_part(parts[index], zmq.SNDMORE if index < last else 0)
        return True

    def _send_part(self, part: WirePart, flags: int) -> None:
        if isinstance(part, PinnedBuffer):
            self._pinned.send(part, flags)
        else:  # pyzmq copies small parts and sends large ones zero-copy
            self._socket.send(part, flags, copy=False)  # type: ignore[call-overload]

    @staticmethod
    def _wait_until(deadline: float, stop: StopFlag) -> bool:
        while not stop.requested:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return True
            time.sleep(min(remaining, _WAIT_SLICE_S))
        return False

    def close(self, linger_s: float) -> None:
        """Close the socket, giving queued messages up to `linger_s` seconds to leave."""
        self._socket.close(linger=int(linger_s * 1000))
        self._context.term()
