"""std_daq's writer and driver as docs/interfaces.md describes them, for mixed-deployment tests.

Written from the spec alone: protobuf classes built from the spec's schema
(tests/common/spec_schema.py, not stddaq's generated code), std_daq's fields only, no
stddaq additions, no heartbeat, no probe answers beyond std_daq's one response per
create / confirm / close.

    python -m tests.driver.std_daq_peers writer CONFIG K [--fail-create REASON]
    python -m tests.driver.std_daq_peers driver CONFIG --ws-port P

The writer binds PUSH `<ipc>/<D>-writer-<k>`, connects PULL to `<ipc>/<D>-driver-<k>`,
writes `<path><k>.h5` (group `/<D>/`, `data` [n, H, W], `metadata` {image_id, status}) from
the ring (`/dev/shm/<D>-image`, slot `image_id % n_slots`) in the order received. The
driver serves std_daq's WebSocket (section 8), deals image i to writer i % N.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from typing import Any

import h5py
import numpy as np
import zmq
from websockets.sync.server import ServerConnection, serve

from tests.common.spec_schema import spec_classes

SPEC = spec_classes()
ANSWER_TIMEOUT_MS = 5000
SUCCESS, FAILURE = 1, 2
"""ResponseCode values (the spec: UNKNOWN 0, SUCCESS 1, FAILURE 2)."""


def ipc(config: dict[str, Any], name: str) -> str:
    """`ipc://<ipc_dir>/<D>-<name>` (std_daq: /tmp)."""
    return f"ipc://{config.get('ipc_dir', '/tmp')}/{config['detector_name']}-{name}"


def response(ok: bool, reason: str = "") -> bytes:
    """A WriterResponse with std_daq's fields."""
    code = SUCCESS if ok else FAILURE
    return bytes(SPEC["WriterResponse"](code=code, reason=reason).SerializeToString())


# ----------------------------------------------------------------------------- writer


class PeerWriter:
    """std_daq's writer k: one file per CreateFileCommand, images appended as they come."""

    def __init__(self, config: dict[str, Any], index: int, fail_create: str | None) -> None:
        self.config = config
        self.index = index
        self.fail_create = fail_create
        self.detector = config["detector_name"]
        self.height, self.width = config["image_pixel_height"], config["image_pixel_width"]
        self.dtype = np.dtype(f"<u{config['bit_depth'] // 8}")
        slot_bytes = self.height * self.width * self.dtype.itemsize
        gigabytes = int(config.get("ram_buffer_gb", 0))  # std_daq reads it as an integer
        self.n_slots = max(1000, math.floor(gigabytes * 2**30 / slot_bytes))
        self.ring: np.ndarray[Any, Any] | None = None
        self.file: h5py.File | None = None
        context = zmq.Context.instance()
        self.answers = context.socket(zmq.PUSH)
        self.answers.setsockopt(zmq.LINGER, 0)
        self.answers.bind(ipc(config, f"writer-{index}"))
        self.commands = context.socket(zmq.PULL)
        self.commands.setsockopt(zmq.LINGER, 0)
        self.commands.setsockopt(zmq.RCVTIMEO, 1000)
        self.commands.connect(ipc(config, f"driver-{index}"))

    def _ring(self) -> np.ndarray[Any, Any]:
        if self.ring is None:
            path = f"/dev/shm/{self.detector}-image"
            self.ring = np.memmap(
                path, self.dtype, "r", shape=(self.n_slots, self.height, self.width)
            )
        return self.ring

    def run(self) -> None:
        """Answer commands until killed."""
        print("READY peer writer", flush=True)
        while True:
            try:
                payload = self.commands.recv()
            except zmq.Again:
                continue
            action = SPEC["WriterAction"].FromString(payload)
            kind = action.WhichOneof("action")
            if kind == "record_image":
                self._record(action.record_image.image_metadata)
            elif kind == "create_file":
                self.answers.send(self._create(action.create_file.path))
            elif kind == "confirm_last_image":
                self.answers.send(response(self.file is not None, "" if self.file else "no file"))
            elif kind == "close_file":
                self.answers.send(self._close())
            # anything else: not std_daq's; skipped

    def _create(self, path: str) -> bytes:
        if self.fail_create:
            return response(False, self.fail_create)
        name = f"{path}{self.index}.h5"
        try:
            self.file = h5py.File(name, "x")
        except OSError as error:
            return response(False, f"cannot create {name}: {error}")
        group = self.file.create_group(self.detector)
        group.create_dataset(
            "data", (0, self.height, self.width), self.dtype,
            maxshape=(None, self.height, self.width), chunks=(1, self.height, self.width),
        )
        record = np.dtype([("image_id", "<u8"), ("status", "<u8")])
        group.create_dataset("metadata", (0,), record, maxshape=(None,), chunks=(1024,))
        return response(True)

    def _record(self, meta: Any) -> None:
        if self.file is None:
            return
        group = self.file[self.detector]
        data, records = group["data"], group["metadata"]
        n = data.shape[0]
        data.resize(n + 1, axis=0)
        data[n] = self._ring()[meta.image_id % self.n_slots]
        records.resize(n + 1, axis=0)
        records[n] = (meta.image_id, meta.status)

    def _close(self) -> bytes:
        if self.file is None:
            return response(False, "no file is open")
        self.file.close()
        self.file = None
        return response(True)


# ----------------------------------------------------------------------------- driver


class PeerDriver:
    """std_daq's driver: WebSocket control, deals images round-robin by arrival count."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.n_writers = max(1, int(config.get("number_of_writers", 0)))
        context = zmq.Context.instance()
        self.pushes, self.pulls = [], []
        for k in range(self.n_writers):
            push = context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.bind(ipc(config, f"driver-{k}"))
            pull = context.socket(zmq.PULL)
            pull.setsockopt(zmq.LINGER, 0)
            pull.setsockopt(zmq.RCVTIMEO, ANSWER_TIMEOUT_MS)
            pull.connect(ipc(config, f"writer-{k}"))
            self.pushes.append(push)
            self.pulls.append(pull)
        self.images = context.socket(zmq.SUB)
        self.images.setsockopt(zmq.LINGER, 0)
        self.images.setsockopt(zmq.SUBSCRIBE, b"")
        self.images.setsockopt(zmq.RCVTIMEO, 100)
        self.images.connect(ipc(config, "image"))
        self.lock = threading.Lock()
        self.history: list[dict[str, Any]] = [{"status": "idle"}]
        self.count = 0
        self.stop_requested = threading.Event()

    def _set(self, status: str, **extra: Any) -> None:
        with self.lock:
            self.history.append({"status": status, **extra})

    @property
    def state(self) -> str:
        with self.lock:
            return str(self.history[-1]["status"])

    def _ask_all(self, action: Any) -> str | None:
        """Send `action` to every writer; None if all answered SUCCESS, else the reason."""
        for push in self.pushes:
            push.send(action.SerializeToString())
        failure = None
        for k, pull in enumerate(self.pulls):
            try:
                answer = SPEC["WriterResponse"].FromString(pull.recv())
            except zmq.Again:
                failure = failure or f"writer {k} did not answer"
                continue
            if answer.code != SUCCESS:
                failure = failure or f"writer {k}: {answer.reason}"
        return failure

    def start(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Begin an acquisition in a thread; an answer only if refused."""
        if self.state != "idle":
            return {"status": "rejected", "reason": f"the driver is {self.state}"}
        self.stop_requested.clear()
        self._set("started")
        threading.Thread(target=self._acquire, args=(request,), daemon=True).start()
        return None

    def _acquire(self, request: dict[str, Any]) -> None:
        action = SPEC["WriterAction"]
        self._set("creating_file")
        path = os.path.join(request["path"], request.get("file_prefix", "file"))
        create = action(create_file=SPEC["CreateFileCommand"](
            path=path, writer_id=int(request.get("writer_id", 0))))
        failure = self._ask_all(create)
        if failure is None:
            self._set("file_created")
            self._set("waiting_for_first_image")
            failure = self._record(int(request.get("n_image", 16777215)))
        if failure is None:
            self._set("saving_file", count=self.count)
            failure = self._ask_all(action(confirm_last_image=SPEC["ConfirmLastImageWritten"]()))
        close_failure = self._ask_all(action(close_file=SPEC["CloseFile"]()))
        failure = failure or close_failure
        if failure is None:
            self._set("file_saved", count=self.count)
        else:
            self._set("error", reason=failure)
        self._set("idle")

    def _record(self, n_image: int) -> str | None:
        self.count = 0
        while self.count < n_image and not self.stop_requested.is_set():
            try:
                payload = self.images.recv()
            except zmq.Again:
                continue
            meta = SPEC["ImageMetadata"].FromString(payload)
            record = SPEC["WriterAction"](record_image=SPEC["RecordImage"](image_metadata=meta))
            self.pushes[self.count % self.n_writers].send(record.SerializeToString())
            self.count += 1
            if self.count == 1:
                self._set("recording", count=1)
        if self.stop_requested.is_set():
            self._set("stop", count=self.count)
        return None

    def serve_client(self, connection: ServerConnection) -> None:
        """Push status changes and a status every 100 ms; take start/stop commands."""
        sent = len(self.history) - 1
        last_push = 0.0
        while True:
            try:
                text = connection.recv(timeout=0.02)
            except TimeoutError:
                text = None
            except Exception:
                return
            if text is not None:
                try:
                    request = json.loads(text)
                except json.JSONDecodeError as error:
                    connection.send(json.dumps({"status": "error", "reason": str(error)}))
                    continue
                if request.get("command") == "start":
                    refused = self.start(request)
                    if refused:
                        connection.send(json.dumps(refused))
                elif request.get("command") == "stop":
                    self.stop_requested.set()
            with self.lock:
                new = self.history[sent + 1 :]
                sent = len(self.history) - 1
                current = {"status": self.history[-1]["status"], "count": self.count}
            for change in new:
                connection.send(json.dumps(change))
            now = time.monotonic()
            if now - last_push >= 0.1:
                last_push = now
                connection.send(json.dumps(current))


def main(argv: list[str]) -> int:
    """Run one peer."""
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("writer", "driver"))
    parser.add_argument("config")
    parser.add_argument("index", type=int, nargs="?", default=0)
    parser.add_argument("--fail-create", default=None)
    parser.add_argument("--ws-port", type=int, default=8080)
    args = parser.parse_args(argv)
    with open(args.config) as handle:
        config = json.load(handle)
    if args.role == "writer":
        PeerWriter(config, args.index, args.fail_create).run()
        return 0
    driver = PeerDriver(config)
    with serve(driver.serve_client, "127.0.0.1", args.ws_port) as server:
        print("READY peer driver", flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
