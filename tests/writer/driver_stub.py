"""A test-side stand-in for the driver: speaks docs/driver-writer-protocol.md over ZeroMQ."""

from __future__ import annotations

import json
import struct
import time
from typing import Any

import zmq

from stddaq_common.bus.metadata import ImageMeta, encode_image_metadata

DEADLINE_S = 30.0


class DriverStub:
    """Binds the writers' command sockets and the events socket, like the driver."""

    def __init__(self, ipc_dir: str, detector: str, n_writers: int) -> None:
        self.detector = detector
        self.n_writers = n_writers
        self.context = zmq.Context()
        self.commands = []
        for k in range(n_writers):
            push = self.context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.setsockopt(zmq.SNDTIMEO, int(DEADLINE_S * 1000))
            push.bind(f"ipc://{ipc_dir}/{detector}-writer-{k}")
            self.commands.append(push)
        self.events = self.context.socket(zmq.PULL)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events.bind(f"ipc://{ipc_dir}/{detector}-writer-events")
        self.seen: list[dict[str, Any]] = []
        """Every event received."""
        self.unclaimed: list[dict[str, Any]] = []
        """Received events (other than heartbeat/progress) no wait_event has returned yet."""

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
            if not self.events.poll(100):
                continue
            event: dict[str, Any] = json.loads(self.events.recv())
            self.seen.append(event)
            if matches(event):
                return event
            if event["event"] not in ("heartbeat", "progress"):
                self.unclaimed.append(event)
        raise AssertionError(f"no {wanted} event from writer {writer} within {timeout} s: {self.seen[-5:]}")

    def wait_all(self, kinds: str | tuple[str, ...], acq_id: int | None = None) -> list[dict[str, Any]]:
        """One event of `kinds` from every writer, in writer order."""
        return [self.wait_event(kinds, writer=k, acq_id=acq_id) for k in range(self.n_writers)]

    def create(self, acq_id: int, files: list[str], compression: str = "none", **extra: Any) -> None:
        """Send `create` to every writer (writer k writes files[k])."""
        for k, push in enumerate(self.commands):
            body = {
                "acq_id": acq_id,
                "file": files[k],
                "uid": extra.get("uid", 0),
                "gid": extra.get("gid"),
                "compression": compression,
                "writer_index": k,
                "n_writers": self.n_writers,
                "params": extra.get("params", {"path": "/test", "n_image": 0}),
                "config": extra.get("config", {}),
            }
            push.send_multipart([b"create", json.dumps(body).encode()])

    def send_images(self, acq_id: int, metas: list[ImageMeta], first_entry: int = 0) -> None:
        """Deal images round-robin: entry j goes to writer j % N at index j // N."""
        n = self.n_writers
        for j, meta in enumerate(metas, start=first_entry):
            header = struct.pack("<QQ", acq_id, j // n)
            self.commands[j % n].send_multipart([b"image", header, encode_image_metadata(meta)])

    def close(self, acq_id: int, total: int) -> None:
        """Send `close` with each writer's share of `total` images."""
        n = self.n_writers
        for k, push in enumerate(self.commands):
            share = len(range(k, total, n))
            push.send_multipart([b"close", json.dumps({"acq_id": acq_id, "n_images": share}).encode()])

    def master(self, acq_id: int, file: str, files: list[str], total: int) -> None:
        """Send `master` to writer 0, as the driver does after every writer closed."""
        n = self.n_writers
        body = {
            "acq_id": acq_id, "file": file, "files": files, "n_images": total,
            "images_per_file": [len(range(k, total, n)) for k in range(n)],
            "detector": self.detector,
        }
        self.commands[0].send_multipart([b"master", json.dumps(body).encode()])

    def send_raw(self, writer: int, parts: list[bytes]) -> None:
        """Send any multipart message to a writer."""
        self.commands[writer].send_multipart(parts)

    def shutdown(self) -> None:
        """Close the sockets."""
        for push in self.commands:
            push.close(0)
        self.events.close(0)
        self.context.term()
