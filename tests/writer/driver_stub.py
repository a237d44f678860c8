"""A test-side stand-in for the stddaq driver: speaks docs/driver-writer-protocol.md over
ZeroMQ with the messages of stddaq_common.bus.driver_writer. Events come back as dicts
(`event`, `writer`, `acq_id`, `written`, `missing`, `missing_ids`, `bytes`, `file`, `reason`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import zmq

from stddaq_common.bus.driver_writer import (
    CloseCommand,
    ConfirmCommand,
    CreateCommand,
    MasterCommand,
    driver_address,
    encode_command,
    encode_image,
    parse_response,
    writer_address,
)
from stddaq_common.bus.metadata import ImageMeta, encode_image_metadata

DEADLINE_S = 30.0
PROBE_S = 0.5


class DriverStub:
    """Binds the writers' command sockets and connects to their answer sockets, like the
    driver; probes every writer while it waits (so the writers know a stddaq driver runs)."""

    def __init__(self, ipc_dir: str, detector: str, n_writers: int) -> None:
        self.detector = detector
        self.n_writers = n_writers
        self.context = zmq.Context()
        self.commands = []
        self.answers = []
        self.poller = zmq.Poller()
        for k in range(n_writers):
            push = self.context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.setsockopt(zmq.SNDTIMEO, int(DEADLINE_S * 1000))
            push.bind(driver_address(detector, k, ipc_dir))
            self.commands.append(push)
            pull = self.context.socket(zmq.PULL)
            pull.setsockopt(zmq.LINGER, 0)
            pull.connect(writer_address(detector, k, ipc_dir))
            self.poller.register(pull, zmq.POLLIN)
            self.answers.append(pull)
        self.seen: list[dict[str, Any]] = []
        """Every event received."""
        self.unclaimed: list[dict[str, Any]] = []
        """Received events (other than heartbeat/progress) no wait_event has returned yet."""
        self._next_probe = 0.0

    def _probe(self) -> None:
        now = time.monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + PROBE_S
        payload = encode_command(ConfirmCommand(probe=True))
        for push in self.commands:
            with contextlib.suppress(zmq.Again):
                push.send(payload, zmq.NOBLOCK)

    def _receive(self) -> list[dict[str, Any]]:
        events = []
        for ready, _ in self.poller.poll(100):
            response = parse_response(ready.recv())
            event = response.event
            assert event is not None, f"a stddaq writer answered without its event: {response}"
            events.append({
                "event": event.event.value,
                "writer": event.writer,
                "acq_id": event.acq_id,
                "written": event.written,
                "missing": event.missing,
                "missing_ids": list(event.missing_ids),
                "bytes": event.bytes_written,
                "file": event.file or "",
                "reason": event.reason or "",
                "flushed": event.flushed,
                "batches": event.batches,
            })
        return events

    def wait_event(
        self,
        kinds: str | tuple[str, ...],
        *,
        writer: int | None = None,
        acq_id: int | None = None,
        timeout: float = DEADLINE_S,
    ) -> dict[str, Any]:
        """The next event of one of `kinds` (from `writer`, for `acq_id`); others are kept in
        `seen`. AssertionError after `timeout` s."""
        wanted = (kinds,) if isinstance(kinds, str) else kinds

        def matches(event: dict[str, Any]) -> bool:
            return (
                event["event"] in wanted
                and (writer is None or event["writer"] == writer)
                and (acq_id is None or event["acq_id"] == acq_id)
            )

        for earlier in self.unclaimed:
            if matches(earlier):
                self.unclaimed.remove(earlier)
                return earlier
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._probe()
            events = self._receive()
            found = None
            for event in events:
                self.seen.append(event)
                if found is None and matches(event):
                    found = event
                elif event["event"] not in ("heartbeat", "progress"):
                    self.unclaimed.append(event)
            if found is not None:
                return found
        raise AssertionError(f"no {wanted} event from writer {writer} within {timeout} s: {self.seen[-5:]}")

    def wait_all(self, kinds: str | tuple[str, ...], acq_id: int | None = None) -> list[dict[str, Any]]:
        """One event of `kinds` from every writer, in writer order."""
        return [self.wait_event(kinds, writer=k, acq_id=acq_id) for k in range(self.n_writers)]

    def create(self, acq_id: int, files: list[str], compression: str = "none", **extra: Any) -> None:
        """Send CreateFileCommand to every writer (writer k writes files[k])."""
        for k, push in enumerate(self.commands):
            command = CreateCommand(
                path=files[k].removesuffix(f"{k}.h5"),
                uid=extra.get("uid", 0),
                acq_id=acq_id,
                file=files[k],
                gid=extra.get("gid"),
                compression=compression,  # type: ignore[arg-type]
                writer_index=k,
                n_writers=self.n_writers,
                params=extra.get("params", {"path": "/test", "n_image": 0}),
                config=extra.get("config", {}),
            )
            push.send(encode_command(command))

    def send_images(self, acq_id: int, metas: list[ImageMeta], first_entry: int = 0) -> None:
        """Deal images round-robin: entry j goes to writer j % N at index j // N."""
        n = self.n_writers
        for j, meta in enumerate(metas, start=first_entry):
            self.commands[j % n].send(encode_image(encode_image_metadata(meta), acq_id, j // n))

    def close(self, acq_id: int, total: int) -> None:
        """Send CloseFile with each writer's share of `total` images."""
        n = self.n_writers
        for k, push in enumerate(self.commands):
            share = len(range(k, total, n))
            push.send(encode_command(CloseCommand(acq_id, share)))

    def master(self, acq_id: int, file: str, files: list[str], total: int) -> None:
        """Send BuildMasterFile to writer 0, as the driver does after every writer closed."""
        n = self.n_writers
        command = MasterCommand(
            acq_id=acq_id, file=file, files=files, detector=self.detector, n_images=total,
            images_per_file=[len(range(k, total, n)) for k in range(n)],
        )
        self.commands[0].send(encode_command(command))

    def send_raw(self, writer: int, parts: list[bytes]) -> None:
        """Send any multipart message to a writer."""
        self.commands[writer].send_multipart(parts)

    def shutdown(self) -> None:
        """Close the sockets."""
        for socket in (*self.commands, *self.answers):
            socket.close(0)
        self.context.term()
