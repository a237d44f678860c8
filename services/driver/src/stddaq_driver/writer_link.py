"""The driver's ZeroMQ sockets to its writers (docs/driver-writer-protocol.md).

One PUSH socket per writer, bound at `ipc://<ipc_dir>/<D>-writer-<k>`, and one PULL socket
for all writer events at `ipc://<ipc_dir>/<D>-writer-events`. Nothing blocks forever: a
send that cannot leave within its timeout (writer not running, or not reading) raises
WriterUnreachable naming the writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import zmq

from stddaq_common.bus.metadata_stream import ipc_file_of
from stddaq_common.names import ipc_address
from stddaq_driver.writer_messages import (
    KIND_CLOSE,
    KIND_CREATE,
    KIND_IMAGE,
    KIND_MASTER,
    EventError,
    WriterEvent,
    json_part,
    parse_event,
)

log = logging.getLogger(__name__)

IMAGE_QUEUE_LENGTH = 100_000
"""Image messages queued per writer before a send waits (about 10 MB of metadata)."""

CONTROL_SEND_TIMEOUT_S = 2.0
IMAGE_SEND_TIMEOUT_S = 2.0
_BAD_EVENT_LOG_INTERVAL_S = 5.0


class WriterUnreachable(Exception):
    """A message to writer `index` could not be sent within its timeout."""

    def __init__(self, index: int, what: str, timeout_s: float) -> None:
        self.index = index
        super().__init__(
            f"writer {index} did not take the {what} message within {timeout_s:g} s "
            "(not running, or stuck)"
        )


def writer_address(detector: str, index: int, ipc_dir: str) -> str:
    """`ipc://<ipc_dir>/<D>-writer-<k>`: where the driver sends writer k its messages."""
    return ipc_address(detector, f"writer-{index}", ipc_dir)


def events_address(detector: str, ipc_dir: str) -> str:
    """`ipc://<ipc_dir>/<D>-writer-events`: where every writer sends its events."""
    return ipc_address(detector, "writer-events", ipc_dir)


class WriterLink:
    """The sockets to `n_writers` writers; used by one thread only."""

    def __init__(self, detector: str, ipc_dir: str, n_writers: int) -> None:
        self.n_writers = n_writers
        self.bad_events = 0
        """Writer messages that did not follow the protocol (logged and skipped)."""
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._addresses: list[str] = []
        self._pushes: list[zmq.Socket[bytes]] = []
        self._events: zmq.Socket[bytes] | None = None
        self._next_bad_log = 0.0
        try:
            for index in range(n_writers):
                address = writer_address(detector, index, ipc_dir)
                push = self._context.socket(zmq.PUSH)
                self._pushes.append(push)
                push.setsockopt(zmq.LINGER, 0)
                push.setsockopt(zmq.SNDHWM, IMAGE_QUEUE_LENGTH)
                push.bind(address)
                self._addresses.append(address)
            address = events_address(detector, ipc_dir)
            self._events = self._context.socket(zmq.PULL)
            self._events.setsockopt(zmq.LINGER, 0)
            self._events.setsockopt(zmq.RCVHWM, 100_000)
            self._events.bind(address)
            self._addresses.append(address)
        except zmq.ZMQError as error:
            self.close()
            raise OSError(f"cannot bind the writer sockets in {ipc_dir}: {error.strerror}") from None
        self._poller = zmq.Poller()
        self._poller.register(self._events, zmq.POLLIN)

    @property
    def events_socket(self) -> zmq.Socket[bytes]:
        """The PULL socket of writer events (to poll it with others)."""
        assert self._events is not None
        return self._events

    def _send(self, index: int, parts: list[bytes], what: str, timeout_s: float) -> None:
        push = self._pushes[index]
        try:
            push.send_multipart(parts, zmq.NOBLOCK)
            return
        except zmq.Again:
            pass
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not push.poll(left_ms, zmq.POLLOUT):
                raise WriterUnreachable(index, what, timeout_s)
            try:
                push.send_multipart(parts, zmq.NOBLOCK)
                return
            except zmq.Again:
                continue

    def send_create(self, index: int, body: dict[str, Any]) -> None:
        """`[b"create", json]` to writer `index`."""
        self._send(index, [KIND_CREATE, json_part(body)], "create", CONTROL_SEND_TIMEOUT_S)

    def send_image(self, index: int, header: bytes, raw_metadata: bytes) -> None:
        """`[b"image", header, metadata]` to writer `index` (the metadata bytes unchanged)."""
        try:
            self._pushes[index].send_multipart([KIND_IMAGE, header, raw_metadata], zmq.NOBLOCK)
        except zmq.Again:
            self._send(index, [KIND_IMAGE, header, raw_metadata], "image", IMAGE_SEND_TIMEOUT_S)

    def send_close(self, index: int, body: dict[str, Any]) -> None:
        """`[b"close", json]` to writer `index`."""
        self._send(index, [KIND_CLOSE, json_part(body)], "close", CONTROL_SEND_TIMEOUT_S)

    def send_master(self, body: dict[str, Any]) -> None:
        """`[b"master", json]` to writer 0, which builds the master file."""
        self._send(0, [KIND_MASTER, json_part(body)], "master", CONTROL_SEND_TIMEOUT_S)

    def wait_for_event(self, timeout_ms: int) -> bool:
        """True if an event can be received within `timeout_ms`."""
        return bool(self._poller.poll(timeout_ms))

    def receive_events(self, limit: int = 1000) -> list[WriterEvent]:
        """The events waiting now (at most `limit`); bad ones are counted, logged, skipped."""
        events: list[WriterEvent] = []
        socket = self.events_socket
        for _ in range(limit):
            try:
                parts = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                event = parse_event(parts)
            except EventError as error:
                self._bad_event(str(error), parts)
                continue
            if event.writer >= self.n_writers:
                self._bad_event(
                    f"writer index {event.writer} is not below number_of_writers "
                    f"({self.n_writers})",
                    parts,
                )
                continue
            events.append(event)
        return events

    def _bad_event(self, reason: str, parts: list[bytes]) -> None:
        self.bad_events += 1
        now = time.monotonic()
        if now >= self._next_bad_log:
            self._next_bad_log = now + _BAD_EVENT_LOG_INTERVAL_S
            log.warning("skipped a bad writer event: %s (%r)", reason, parts[0][:200] if parts else b"")

    def close(self) -> None:
        """Close every socket and remove the socket files this link bound."""
        for push in self._pushes:
            push.close(linger=0)
        self._pushes = []
        if self._events is not None:
            self._events.close(linger=0)
            self._events = None
        for address in self._addresses:
            path = ipc_file_of(address)
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        self._addresses = []
