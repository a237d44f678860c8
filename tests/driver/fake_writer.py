"""A minimal writer that speaks docs/driver-writer-protocol.md over real ZeroMQ sockets.

It writes no files: it records what the driver sent and answers as a writer would. Tests
steer it with attributes (`fail_create`, `fail_after_images`) between acquisitions.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from stddaq_driver.image_ids import image_id_of
from stddaq_driver.writer_link import events_address, writer_address
from stddaq_driver.writer_messages import IMAGE_HEADER


@dataclass
class FakeAcquisition:
    """What one acquisition looked like from this writer."""

    acq_id: int
    create: dict[str, Any]
    images: list[tuple[int, int]] = field(default_factory=list)
    """(index, image_id) in arrival order."""
    close: dict[str, Any] | None = None
    master: dict[str, Any] | None = None
    failed: bool = False


class FakeWriter:
    """Writer `index` of `detector`, running in a thread of the test process."""

    def __init__(self, detector: str, ipc_dir: str, index: int) -> None:
        self.index = index
        self.fail_create: str | None = None
        """Answer the next create with this error reason (then reset)."""
        self.fail_after_images: tuple[int, str] | None = None
        """(n, reason): answer error once n images of an acquisition arrived (then reset)."""
        self.acquisitions: dict[int, FakeAcquisition] = {}
        self.protocol_errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._commands = context.socket(zmq.PULL)
        self._commands.setsockopt(zmq.LINGER, 0)
        self._commands.connect(writer_address(detector, index, ipc_dir))
        self._events = context.socket(zmq.PUSH)
        self._events.setsockopt(zmq.LINGER, 0)
        self._events.setsockopt(zmq.SNDHWM, 10_000)
        self._events.connect(events_address(detector, ipc_dir))
        self._thread = threading.Thread(target=self._run, name=f"fake-writer-{index}", daemon=True)
        self._thread.start()

    def acquisition(self, acq_id: int) -> FakeAcquisition:
        """The record of acquisition `acq_id` (KeyError if it never reached this writer)."""
        with self._lock:
            return self.acquisitions[acq_id]

    def close(self) -> None:
        """Stop the thread and close the sockets."""
        self._stop.set()
        self._thread.join(5)

    # --- the thread ---

    def _send(self, event: str, **fields: Any) -> None:
        body = {"writer": self.index, "event": event, **fields}
        with contextlib.suppress(zmq.Again):
            self._events.send(json.dumps(body).encode(), zmq.NOBLOCK)

    def _run(self) -> None:
        try:
            self._send("ready", acq_id=None)
            last_sent = time.monotonic()
            while not self._stop.is_set():
                if self._commands.poll(50):
                    while True:
                        try:
                            parts = self._commands.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._handle(parts)
                    last_sent = time.monotonic()
                if time.monotonic() - last_sent > 0.3:
                    self._send("heartbeat", acq_id=self._open_acquisition())
                    last_sent = time.monotonic()
        finally:
            self._commands.close(0)
            self._events.close(0)

    def _open_acquisition(self) -> int | None:
        """The acquisition whose file is open here (a heartbeat names it, as the real
        writer's does: a heartbeat without it tells the driver this writer restarted)."""
        with self._lock:
            for acq in self.acquisitions.values():
                if acq.close is None and not acq.failed:
                    return acq.acq_id
        return None

    def _handle(self, parts: list[bytes]) -> None:
        kind = parts[0]
        if kind == b"create":
            body = json.loads(parts[1])
            created = FakeAcquisition(body["acq_id"], body)
            with self._lock:
                self.acquisitions[created.acq_id] = created
            if self.fail_create is not None:
                reason, self.fail_create = self.fail_create, None
                created.failed = True
                self._send("error", acq_id=created.acq_id, file=body["file"], reason=reason)
            else:
                self._send("file_created", acq_id=created.acq_id, file=body["file"])
        elif kind == b"image":
            acq_id, index = IMAGE_HEADER.unpack(parts[1])
            with self._lock:
                acq = self.acquisitions.get(acq_id)
                if acq is None or acq.failed:
                    return
                acq.images.append((index, image_id_of(parts[2])))
                count = len(acq.images)
            failure = self.fail_after_images
            if failure is not None and count >= failure[0]:
                self.fail_after_images = None
                acq.failed = True
                self._send("error", acq_id=acq_id, written=count, reason=failure[1])
            else:
                self._send("progress", acq_id=acq_id, written=count, missing=0,
                           bytes=count * 100, missing_ids=[], write_latency_s=0.001)
        elif kind == b"close":
            body = json.loads(parts[1])
            with self._lock:
                acq = self.acquisitions.get(body["acq_id"])
            if acq is None:
                self.protocol_errors.append(f"close for unknown acquisition {body}")
                return
            acq.close = body
            if not acq.failed:
                self._send("closed", acq_id=acq.acq_id, written=len(acq.images),
                           bytes=len(acq.images) * 100, file=acq.create["file"])
        elif kind == b"master":
            body = json.loads(parts[1])
            with self._lock:
                acq = self.acquisitions.get(body["acq_id"])
            if acq is None:
                self.protocol_errors.append(f"master for unknown acquisition {body}")
                return
            acq.master = body
            self._send("closed", acq_id=acq.acq_id, file=body["file"])
        else:
            self.protocol_errors.append(f"unknown message kind {kind!r}")
