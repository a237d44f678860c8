"""A minimal stddaq writer that speaks docs/driver-writer-protocol.md over real ZeroMQ
sockets (messages from stddaq_common.bus.driver_writer).

It writes no files: it records what the driver sent (as plain dicts) and answers as a
writer would. Tests steer it with attributes (`fail_create`, `fail_after_images`) between
acquisitions.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from stddaq_common.bus.driver_writer import (
    CloseCommand,
    ConfirmCommand,
    CreateCommand,
    EventKind,
    ImageCommand,
    MasterCommand,
    ProtocolError,
    driver_address,
    encode_event,
    parse_command,
    writer_address,
)
from stddaq_driver.image_ids import image_id_of


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


def _create_body(command: CreateCommand) -> dict[str, Any]:
    return {
        "acq_id": command.acq_id,
        "file": command.file,
        "uid": command.uid,
        "gid": command.gid,
        "compression": command.compression,
        "writer_index": command.writer_index,
        "n_writers": command.n_writers,
        "params": command.params,
        "config": command.config,
    }


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
        self._ready_sent = False
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._events = context.socket(zmq.PUSH)
        self._events.setsockopt(zmq.LINGER, 0)
        self._events.setsockopt(zmq.SNDHWM, 10_000)
        self._events.bind(writer_address(detector, index, ipc_dir))
        self._commands = context.socket(zmq.PULL)
        self._commands.setsockopt(zmq.LINGER, 0)
        self._commands.connect(driver_address(detector, index, ipc_dir))
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
        payload = encode_event(self.index, EventKind(event), **fields)
        with contextlib.suppress(zmq.Again):
            self._events.send(payload, zmq.NOBLOCK)

    def _run(self) -> None:
        try:
            last_sent = time.monotonic()
            while not self._stop.is_set():
                if self._commands.poll(50):
                    while True:
                        try:
                            payload = self._commands.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._handle(payload)
                    last_sent = time.monotonic()
                if self._ready_sent and time.monotonic() - last_sent > 0.3:
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

    def _handle(self, payload: bytes) -> None:
        try:
            command = parse_command(payload)
        except ProtocolError as error:
            self.protocol_errors.append(str(error))
            return
        if isinstance(command, CreateCommand):
            self._on_create(command)
        elif isinstance(command, ImageCommand):
            self._on_image(command)
        elif isinstance(command, ConfirmCommand):
            self._on_confirm(command)
        elif isinstance(command, CloseCommand):
            self._on_close(command)
        else:
            self._on_master(command)

    def _on_create(self, command: CreateCommand) -> None:
        assert command.acq_id is not None, "a stddaq driver sends the acquisition id"
        body = _create_body(command)
        created = FakeAcquisition(command.acq_id, body)
        with self._lock:
            self.acquisitions[created.acq_id] = created
        if self.fail_create is not None:
            reason, self.fail_create = self.fail_create, None
            created.failed = True
            self._send("error", acq_id=created.acq_id, file=body["file"], reason=reason)
        else:
            self._send("file_created", acq_id=created.acq_id, file=body["file"])

    def _on_image(self, command: ImageCommand) -> None:
        acq_id = command.acq_id
        with self._lock:
            acq = self.acquisitions.get(acq_id) if acq_id is not None else None
            if acq is None or acq.failed:
                return
            acq.images.append((command.index or 0, image_id_of(command.metadata)))
            count = len(acq.images)
        failure = self.fail_after_images
        if failure is not None and count >= failure[0]:
            self.fail_after_images = None
            acq.failed = True
            self._send("error", acq_id=acq.acq_id, written=count, reason=failure[1])
        else:
            self._send("progress", acq_id=acq.acq_id, written=count, missing=0,
                       bytes_written=count * 100, missing_ids=[], write_latency_s=0.001)

    def _on_confirm(self, command: ConfirmCommand) -> None:
        if command.probe:
            kind = "heartbeat" if self._ready_sent else "ready"
            self._ready_sent = True
            self._send(kind, acq_id=self._open_acquisition())
            return
        with self._lock:
            acq = self.acquisitions.get(command.acq_id) if command.acq_id is not None else None
        if acq is None:
            self.protocol_errors.append(f"confirm for unknown acquisition {command}")
            return
        if not acq.failed:
            self._send("confirmed", acq_id=acq.acq_id, written=len(acq.images),
                       bytes_written=len(acq.images) * 100)

    def _on_close(self, command: CloseCommand) -> None:
        with self._lock:
            acq = self.acquisitions.get(command.acq_id) if command.acq_id is not None else None
        if acq is None:
            self.protocol_errors.append(f"close for unknown acquisition {command}")
            return
        body: dict[str, Any] = {"acq_id": command.acq_id, "n_images": command.n_images}
        if command.reason:
            body["reason"] = command.reason
        acq.close = body
        if not acq.failed:
            self._send("closed", acq_id=acq.acq_id, written=len(acq.images),
                       bytes_written=len(acq.images) * 100, file=acq.create["file"])

    def _on_master(self, command: MasterCommand) -> None:
        with self._lock:
            acq = self.acquisitions.get(command.acq_id)
        if acq is None:
            self.protocol_errors.append(f"master for unknown acquisition {command}")
            return
        acq.master = {
            "acq_id": command.acq_id, "file": command.file, "files": command.files,
            "n_images": command.n_images, "images_per_file": command.images_per_file,
            "detector": command.detector,
        }
        self._send("closed", acq_id=acq.acq_id, file=command.file)
