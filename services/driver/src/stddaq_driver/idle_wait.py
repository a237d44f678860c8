"""How the dealing thread sleeps while no acquisition runs.

During an acquisition the thread looks at commands, events and timeouts every POLL_MS;
while idle nothing is due, so it blocks until something arrives: metadata, a writer
event, or a command (submit() writes a byte to a wake-up pipe), at most IDLE_WAIT_MS. An
idle driver so costs no CPU beyond the messages it gets. While the subscriber's own ZMTP
reader has no connection, the wait is at most RECONNECT_WAIT_MS: its reconnection attempts
are made by receive calls, which follow each wait. `nap` is the dealing thread's gathering
pause with libzmq's SUB (image_dealing.py): a sleep that a command ends.
"""

from __future__ import annotations

import contextlib
import os
import select

import zmq

from stddaq_common.bus.metadata_stream import MetadataSubscriber

IDLE_WAIT_MS = 500
"""Longest idle sleep: a stop of the service is noticed within this time."""
RECONNECT_WAIT_MS = 100
"""Longest idle sleep while the subscriber is not connected (libzmq's reconnect interval)."""


class IdleWait:
    """A zmq.Poller over the thread's sockets and a wake-up pipe for commands."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._sockets: tuple[zmq.Socket[bytes], ...] = ()
        self._subscriber: MetadataSubscriber | None = None
        self._handle: zmq.Socket[bytes] | int | None = None
        self._poller = zmq.Poller()

    def watch(self, subscriber: MetadataSubscriber, *sockets: zmq.Socket[bytes]) -> None:
        """Wait for the subscriber and these sockets (replaces the ones watched before)."""
        self._subscriber = subscriber
        self._sockets = sockets
        self._build(subscriber.poll_handle)

    def _build(self, handle: zmq.Socket[bytes] | int) -> None:
        poller = zmq.Poller()
        poller.register(handle, zmq.POLLIN)
        for sock in self._sockets:
            poller.register(sock, zmq.POLLIN)
        poller.register(self._read, zmq.POLLIN)
        self._handle = handle
        self._poller = poller

    def wake(self) -> None:
        """End a wait now (thread-safe, never blocks): a command was queued."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, b"\0")

    def wait(self, timeout_ms: int = IDLE_WAIT_MS) -> None:
        """Block until a watched socket has a message, wake() was called, or the timeout."""
        subscriber = self._subscriber
        if subscriber is not None:
            if subscriber.has_queued():
                timeout_ms = 0
            elif not subscriber.connected:
                timeout_ms = min(timeout_ms, RECONNECT_WAIT_MS)
            handle = subscriber.poll_handle
            if handle is not self._handle and handle != self._handle:
                self._build(handle)
        self._poller.poll(timeout_ms)
        self._drain()

    def nap(self, timeout_s: float) -> None:
        """Sleep up to `timeout_s` unless a command comes (wake())."""
        try:
            readable, _, _ = select.select([self._read], [], [], timeout_s)
        except (OSError, ValueError):  # the pipe is closed: the engine is going away
            return
        if readable:
            self._drain()

    def _drain(self) -> None:
        """Empty the wake-up pipe (the commands it announced are taken from their queue)."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._read, 4096):
                pass

    def close(self) -> None:
        """Close the pipe."""
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
