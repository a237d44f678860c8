"""Receiver throughput: fake camera -> receiver (4 connections) -> ring + metadata.

2 MiB frames (1024 x 1024 uint16, Poisson(100) noise, 64 distinct frames), BSREAD over
TCP on 127.0.0.1, 4 PULL connections, the receiver and camera as real processes, and a
subscriber in this process that checks every id arrives, in order, with its slot still
valid (and every 50th image pixel by pixel).

Lossless by construction at the camera: the camera's PUSH socket waits while the
receiver's queues are full, so it never sends faster than the receiver takes frames (it
runs "as fast as possible", i.e. at the receiver's sustainable rate). `lost` counts what
the subscriber did not see, in order, with a valid slot.

Two receivers run side by side (each idle while the other is measured): the default
(`--input-reader zmtp`, the receiver's own ZMTP reader receiving images straight into their
slots; the records without a reader in their name) and `--input-reader zmq` (libzmq, the
reference; records named "..., zmq reader").

Ceiling, measured in the same run with the same camera process and the same messages: a
raw pyzmq sink with 4 PULL connections receiving zero-copy and not touching the data, with
the receiver's glibc malloc settings (else it pays page faults the receiver avoids).
Rates run from the camera's timestamp of the first frame (the BSREAD global timestamp) to
the arrival of the last message (sink) or metadata (subscriber), so the receiver's
reordering start-up hold is included. Receiver CPU per GB reads /proc/<pid>/stat
(utime + stime) around a run; GB are of uncompressed image bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.harness import BenchRecord, record
from stddaq_common.bus.metadata_stream import MetadataSubscriber
from stddaq_common.names import ipc_path, shm_name
from stddaq_common.ring.image_ring import ImageRing
from stddaq_common.testing.configs import write_pco_config
from stddaq_fake_camera.frames import FramePattern
from stddaq_receiver.malloc_tuning import MAX_MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES

HEIGHT, WIDTH = 1024, 1024
FRAME_BYTES = HEIGHT * WIDTH * 2
PERIOD = 64
CONNECTIONS = 4
CHECK_EVERY = 50
READY_TIMEOUT_S = 120.0
QUIET_TIMEOUT_S = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SINK_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(MAX_MMAP_THRESHOLD_BYTES),
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES),
}
"""The receiver's malloc settings (stddaq_receiver.malloc_tuning), given to the raw sink too,
so that the ceiling does not pay page faults the receiver avoids."""

_SINK = """
import json, sys, time, zmq
address, connections, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
context = zmq.Context()
poller = zmq.Poller()
for _ in range(connections):
    sock = context.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 20)
    sock.connect(address)
    poller.register(sock, zmq.POLLIN)
print("READY sink", flush=True)
received = nbytes = 0
first_stamp = None
cpu_start = time.process_time()
while received < count:
    ready = poller.poll(30000)
    if not ready:
        break
    for sock, _ in ready:
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            continue
        if first_stamp is None:
            stamp = json.loads(parts[0].bytes)["global_timestamp"]
            first_stamp = stamp["sec"] + stamp["ns"] / 1e9
        received += 1
        nbytes += sum(len(part) for part in parts)
last = time.time()
print(json.dumps({"received": received, "bytes": nbytes, "first": first_stamp, "last": last,
                  "cpu": time.process_time() - cpu_start}), flush=True)
"""


@dataclass(frozen=True, slots=True)
class RunResult:
    """One streaming run: frames seen, seconds, CPU seconds of the receiving process."""

    frames: int
    lost: int
    seconds: float
    cpu_seconds: float
    wire_bytes: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def image_gbps(self) -> float:
        return self.frames * FRAME_BYTES / self.seconds / 1e9

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu_seconds / (self.frames * FRAME_BYTES / 1e9)


def _free_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def _start(args: list[str], stderr: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `python <args>` (with `env` added to ours) and wait for its READY line on stdout."""
    with stderr.open("w") as err:
        process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=err, text=True,
                                   env={**os.environ, **(env or {})})
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("READY"):
            return process
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"{args[:2]} did not start: {stderr.read_text()[-2000:]}")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _camera(
    address: str, frames: int, first_id: int, compression: str, workdir: Path, period: int = PERIOD
) -> subprocess.Popen[str]:
    args = ["-m", "stddaq_fake_camera", "--address", address, "--shape", str(HEIGHT), str(WIDTH),
            "--rate", "0", "--frames", str(frames), "--first-id", str(first_id), "--period", str(period),
            "--compression", compression]
    return _start(args, workdir / f"camera-{compression}-{first_id}.err")


def ceiling(frames: int, compression: str, workdir: Path, period: int = PERIOD) -> RunResult:
    """Raw pyzmq: the same camera into 4 zero-copy PULL sockets that do not touch the data.

    `period`: the camera's frame period (the end-to-end benchmark uses the camera's default).
    """
    address = _free_address()
    sink_args = ["-c", _SINK, address, str(CONNECTIONS), str(frames)]
    sink = _start(sink_args, workdir / "sink.err", SINK_MALLOC_ENV)
    camera = _camera(address, frames, 0, compression, workdir, period)
    assert sink.stdout is not None
    result = json.loads(sink.stdout.readline())
    sink.wait(30)
    camera.wait(60)
    return RunResult(result["received"], frames - result["received"], result["last"] - result["first"],
                     result["cpu"], result["bytes"])


def receiver_run(
    receiver: subprocess.Popen[str],
    address: str,
    ring: ImageRing,
    subscriber: MetadataSubscriber,
    frames: int,
    first_id: int,
    compression: str,
    workdir: Path,
) -> RunResult:
    """Camera -> receiver -> ring + metadata; the subscriber checks every id."""
    pattern = FramePattern((HEIGHT, WIDTH), np.dtype("<u2"), PERIOD)
    cpu_before = _cpu_seconds(receiver.pid)
    camera = _camera(address, frames, first_id, compression, workdir)
    expected = first_id
    good = 0
    first_stamp = None
    last = time.time()
    while expected < first_id + frames:
        meta = subscriber.receive(timeout_ms=int(QUIET_TIMEOUT_S * 1000))
        if meta is None:
            break
        last = time.time()
        if first_stamp is None and meta.detail is not None:
            first_stamp = meta.detail.global_timestamp_sec + meta.detail.global_timestamp_ns / 1e9  # type: ignore[union-attr]
        if meta.image_id != expected:  # a gap or a step back: everything not seen in order is lost
            expected = max(expected, meta.image_id + 1)
            continue
        expected += 1
        view = ring.view(meta.image_id)
        if view is None:
            continue
        if meta.image_id % CHECK_EVERY == 0:
            image = view.array("<u2", (HEIGHT, WIDTH))
            if not np.array_equal(image, pattern.frame(meta.image_id)) or not view.still_valid():
                continue
        good += 1
    cpu = _cpu_seconds(receiver.pid) - cpu_before
    camera.wait(60)
    seconds = last - (first_stamp if first_stamp is not None else last - 1e-9)
    return RunResult(good, frames - good, seconds, cpu)


def _config(workdir: Path, detector: str) -> Path:
    path = workdir / "daq.json"
    return write_pco_config(path, detector, HEIGHT, WIDTH, stats_collection_period=60)


def _records(
    label: str, ours: RunResult, raw: RunResult, ceiling_label: str | None = None
) -> list[BenchRecord]:
    ceiling_label = ceiling_label or label
    ceiling_name = f"raw pyzmq PUSH/PULL x{CONNECTIONS} zero-copy ({ceiling_label})"
    return [
        record(f"receiver {label}: lossless frames/s", ours.fps, "frames/s", ceiling_name, raw.fps,
               ours.lost),
        record(f"receiver {label}: lossless image GB/s", ours.image_gbps, "GB/s", ceiling_name,
               raw.image_gbps, ours.lost),
        record(f"receiver {label}: CPU s per image GB", ours.cpu_per_gb, "CPU s/GB",
               f"raw PULL sink CPU s per GB ({ceiling_label})", raw.cpu_per_gb, ours.lost),
    ]


def _start_receiver(workdir: Path, reader: str) -> tuple[subprocess.Popen[str], str, str]:
    """A receiver with `--input-reader reader` on its own detector: (process, address, detector)."""
    detector = f"bench-rcv-{uuid.uuid4().hex[:8]}"
    address = _free_address()
    config_dir = workdir / reader
    config_dir.mkdir()
    receiver = _start(["-m", "stddaq_receiver", str(_config(config_dir, detector)), address,
                       "-n", str(CONNECTIONS), "--input-reader", reader], workdir / f"receiver-{reader}.err")
    return receiver, address, detector


def _stop_receiver(receiver: subprocess.Popen[str], detector: str, stderr: Path) -> None:
    if receiver.poll() is None:
        receiver.terminate()
        if receiver.wait(30) != 0:
            print(stderr.read_text()[-2000:], file=sys.stderr)
    ring_path = f"/dev/shm/{shm_name(detector)}"
    for path in (ring_path, f"{ring_path}.stddaq", ipc_path(detector)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def run(quick: bool) -> list[BenchRecord]:
    """Uncompressed and bitshuffle_lz4 runs beside their same-run raw ceilings, for the
    default reader (zmtp: the receiver's own ZMTP reader, images straight into their
    slots; records without a reader in their name) and for the libzmq reader (`zmq reader`).

    Full mode alternates ceiling and receiver runs twice and keeps the best of each (the
    machine is noisy); `lost` adds up every receiver run.
    """
    frames = {"none": 1000, "bitshuffle_lz4": 600} if quick else {"none": 5000, "bitshuffle_lz4": 2500}
    repeats = 1 if quick else 2
    readers = ("zmtp", "zmq")
    records: list[BenchRecord] = []
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp:
        workdir = Path(tmp)
        started: dict[str, tuple[subprocess.Popen[str], str, str]] = {}
        try:
            for reader in readers:
                started[reader] = _start_receiver(workdir, reader)
            attached = {
                reader: (ImageRing.attach(shm_name(detector), timeout=30.0),
                         MetadataSubscriber(f"ipc://{ipc_path(detector)}", timeout_ms=1000))
                for reader, (_, _, detector) in started.items()
            }
            first_id = 0
            for compression, label in (("none", "uncompressed"), ("bitshuffle_lz4", "bitshuffle_lz4")):
                n = frames[compression]
                raws: list[RunResult] = []
                ours: dict[str, list[RunResult]] = {reader: [] for reader in readers}
                for _ in range(repeats):
                    raws.append(ceiling(n, compression, workdir))
                    for reader in readers:
                        receiver, address, _ = started[reader]
                        ring, subscriber = attached[reader]
                        ours[reader].append(receiver_run(receiver, address, ring, subscriber, n, first_id,
                                                         compression, workdir))
                        first_id += n
                raw = max(raws, key=lambda result: result.fps)
                for reader in readers:
                    best = max(ours[reader], key=lambda result: result.fps)
                    lost_total = sum(result.lost for result in ours[reader])
                    best = RunResult(best.frames, lost_total, best.seconds, best.cpu_seconds)
                    name = label if reader == readers[0] else f"{label}, {reader} reader"
                    records += _records(name, best, raw, label)
            for ring, subscriber in attached.values():
                subscriber.close()
                ring.close()
        finally:
            for reader, (receiver, _, detector) in started.items():
                _stop_receiver(receiver, detector, workdir / f"receiver-{reader}.err")
    return records
