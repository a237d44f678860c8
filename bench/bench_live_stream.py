"""Live stream: forward-mode throughput of 2 MiB frames, and what it costs an acquisition.

Processes (as in production, each its own interpreter): a producer that owns the ring and
publishes metadata, the live stream (`python -m stddaq_live_stream`), a viewer
(`python -m stddaq_live_stream.probe`) that counts what arrives over TCP loopback without
touching the pixels, and this process.

1. Ceiling: raw pyzmq PUB -> SUB over TCP loopback, zero-copy sends of the same 2 MiB
   buffer with an array-1.0 header, same send high-water mark, same viewer program.
2. Live stream, forward mode, one viewer: the producer marks slots written (no copy, so
   the producer costs little) at a rate above what the stream can send; images/s
   arriving at the viewer.
3. Acquisition: the producer writes 2 MiB frames into the ring and publishes; this
   process reads every image out of the ring (read_into, as a writer does), with flow
   control so nothing is overwritten; images/s through the ring and lost images. Run
   with the live stream idle (no viewer subscribed: it reads metadata and copies
   nothing) and while it forwards every image it can to a viewer, interleaved, best of
   each: the ratio is what forwarding (at the default nice 10) leaves of the acquisition.
4. CPU per image at a fixed sustainable rate (`CPU_RATE_HZ` 2 MiB images to one viewer):
   the live stream's CPU ms per delivered image (/proc/<pid>/stat over the phase), beside
   a raw pyzmq sender in its own process sending the same frames (array-1.0 header + the
   same 2 MiB buffer, zero-copy, same high-water mark) at the same rate to the same
   viewer program. Ratio = live stream / raw (lower is better; 1 is the floor).

On a 2-core machine the four processes share two cores: the figures are what the live
stream costs there, not its cost on a dedicated server.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.context import SpawnContext
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from bench.harness import BenchRecord, rate, record
from stddaq_common.bus.metadata import Dtype, ImageMeta
from stddaq_common.bus.metadata_stream import MetadataPublisher, MetadataSubscriber
from stddaq_common.config.model import load_config
from stddaq_common.ring.image_ring import ImageRing
from stddaq_common.testing.configs import pco_config
from stddaq_common.wire.array10 import encode_array10_header

HEIGHT, WIDTH = 1024, 1024
FRAME_BYTES = HEIGHT * WIDTH * 2
SEND_HWM = 100
"""The live stream's default send high-water mark (std_daq's)."""
CPU_RATE_HZ = 200.0
"""Images per second in the CPU-per-image phase: well below what either path can carry."""
GB = 1e9
LEAD = 400
"""Images the producer may be ahead of the acquisition reader (the ring has 1000 slots)."""
PACED_RATE_HZ = 4000.0
"""Producer rate in phase 3: 8 GB/s of 2 MiB images, more than any path here can carry."""
DEADLINE_S = 60.0


# --- child processes (spawned) -------------------------------------------------------


class _Probe:
    """`python -m stddaq_live_stream.probe ADDRESS --seconds S --json` (a viewer importing only pyzmq)."""

    def __init__(self, address: str, seconds: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stddaq_live_stream.probe", address, "--seconds", str(seconds), "--json"],
            stdout=subprocess.PIPE,
        )

    def done(self) -> bool:
        """True once the probe has exited."""
        return self.process.poll() is not None

    def result(self) -> tuple[int, float]:
        """(messages, seconds between the first and the last) the probe counted."""
        out, _ = self.process.communicate(timeout=DEADLINE_S)
        fields = json.loads(out)
        return int(fields["messages"]), float(fields["seconds"])


def _producer_process(config_path: str, commands: Any, results: Any, read_upto: Synchronized[int]) -> None:
    """Owns the ring and the metadata publisher; runs "paced" and "acquire" phases on request."""
    config = load_config(config_path)
    ring = ImageRing.for_config(config, create=True)
    publisher = MetadataPublisher.for_config(config)
    frame = np.random.default_rng(5).integers(0, 4096, (HEIGHT, WIDTH), dtype=np.uint16)
    meta = ImageMeta(0, HEIGHT, WIDTH, FRAME_BYTES, Dtype.UINT16)
    results.put("ready")
    try:
        while True:
            command = commands.get()
            if command[0] == "stop":
                return
            if command[0] == "paced":
                _, hz, seconds, next_id = command
                results.put(_paced(ring, publisher, meta, hz, seconds, next_id))
            else:
                _, seconds, next_id = command
                results.put(_acquire(ring, publisher, meta, frame, seconds, next_id, read_upto))
    finally:
        publisher.close()
        ring.close()


def _paced(
    ring: ImageRing, publisher: MetadataPublisher, meta: ImageMeta, hz: float, seconds: float, image_id: int
) -> tuple[int, int]:
    """Mark slots written (no copy) and publish at `hz` for `seconds`: (next id, refused publishes)."""
    interval = 1.0 / hz
    start = time.perf_counter()
    due = start
    refused = 0
    while due - start < seconds:
        ring.begin_write(image_id)
        ring.end_write(image_id, FRAME_BYTES)
        meta.image_id = image_id
        refused += not publisher.publish(meta)
        image_id += 1
        due += interval
        delay = due - time.perf_counter()
        if delay > 0.0005:
            time.sleep(delay)
    return image_id, refused


def _acquire(
    ring: ImageRing,
    publisher: MetadataPublisher,
    meta: ImageMeta,
    frame: np.ndarray[Any, Any],
    seconds: float,
    image_id: int,
    read_upto: Synchronized[int],
) -> tuple[int, int]:
    """Write and publish as fast as the reader allows for `seconds`: (next id, refused publishes)."""
    start = time.perf_counter()
    refused = 0
    while time.perf_counter() - start < seconds:
        while image_id - read_upto.value > LEAD:
            time.sleep(0.0001)
        ring.write(image_id, frame)
        meta.image_id = image_id
        refused += not publisher.publish(meta)
        image_id += 1
    return image_id, refused


# --- this process ----------------------------------------------------------------------


def _free_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def _write_config(directory: str, stream_address: str) -> str:
    path = os.path.join(directory, "daq.json")
    document = pco_config(
        f"lsbench{os.getpid()}", HEIGHT, WIDTH,
        ipc_dir=directory,
        stats_collection_period=3600,
        live_stream_configs={stream_address: {"type": "forward", "config": []}},
    )  # fmt: skip
    Path(path).write_text(json.dumps(document))
    return path


def _ceiling(seconds: float) -> tuple[int, float]:
    """Raw pyzmq PUB zero-copy sends until the probe reports what arrived.

    XPUB_NODROP with blocking sends: the sender waits for the viewer instead of dropping,
    so what arrives is the most the transport carries.
    """
    address = _free_address()
    pub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, SEND_HWM)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.setsockopt(zmq.SNDTIMEO, 1000)
    pub.bind(address)
    frame = np.random.default_rng(5).integers(0, 4096, (HEIGHT, WIDTH), dtype=np.uint16)
    header = encode_array10_header((HEIGHT, WIDTH), frame.dtype, 0)
    pixels = frame.data.cast("B")
    viewer = _Probe(address, seconds)
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not viewer.done() and time.monotonic() < deadline:
            for _ in range(20):
                with contextlib.suppress(zmq.Again):
                    pub.send(header, zmq.SNDMORE)
                    pub.send(pixels, copy=False)
        return viewer.result()
    finally:
        pub.close(linger=0)


def _raw_sender(address: str, hz: float, seconds: float, results: Any) -> None:
    """Raw pyzmq: send the same array-1.0 frames at `hz` for `seconds`; (CPU s, sent)."""
    pub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, SEND_HWM)
    pub.bind(address)
    frame = np.random.default_rng(5).integers(0, 4096, (HEIGHT, WIDTH), dtype=np.uint16)
    pixels = frame.data.cast("B")
    results.put("ready")
    if not pub.poll(int(DEADLINE_S * 1000)):  # the viewer's subscription
        results.put((0.0, 0))
        return
    pub.recv()
    cpu_before = time.process_time()
    start = due = time.perf_counter()
    image_id = sent = 0
    while due - start < seconds:
        header = encode_array10_header((HEIGHT, WIDTH), frame.dtype, image_id)
        with contextlib.suppress(zmq.Again):
            pub.send(header, zmq.SNDMORE | zmq.NOBLOCK)
            pub.send(pixels, copy=False)
            sent += 1
        image_id += 1
        due += 1.0 / hz
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    results.put((time.process_time() - cpu_before, sent))
    time.sleep(1.0)  # let the last frames leave before the socket closes
    pub.close(linger=0)


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _read_acquisition(
    ring: ImageRing,
    subscriber: MetadataSubscriber,
    producer_results: Any,
    read_upto: Synchronized[int],
    first_id: int,
) -> tuple[int, int, int, float]:
    """Read every image of an acquisition phase: (next id, images read, lost, seconds)."""
    buffer = bytearray(FRAME_BYTES)
    read = lost = 0
    expected = first_id
    started = ended = 0.0
    end_id: int | None = None
    refused = 0
    deadline = time.monotonic() + DEADLINE_S
    while (end_id is None or expected < end_id) and time.monotonic() < deadline:
        meta = subscriber.receive(100)
        if meta is not None and meta.image_id >= expected:
            lost += meta.image_id - expected
            expected = meta.image_id + 1
            if ring.read_into(meta.image_id, buffer) is None:
                lost += 1
            else:
                read += 1
            ended = time.perf_counter()
            started = started or ended
            read_upto.value = meta.image_id
        if end_id is None:
            with contextlib.suppress(queue.Empty):
                end_id, refused = producer_results.get_nowait()
    if end_id is None or expected < end_id:
        raise RuntimeError("the acquisition phase did not finish")
    return end_id, read, lost + refused, ended - started


class _LiveStream:
    """The live stream as a child process (stopped by PID)."""

    def __init__(self, config_path: str, address: str) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stddaq_live_stream", config_path, address],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )

    def wait_ready(self) -> None:
        """Wait for the READY line (RuntimeError with its log if it exits instead)."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith("READY"):
            raise RuntimeError(f"live stream did not start: {self.log()}")

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stop(self) -> dict[str, str]:
        """SIGTERM; the fields of its last stats line."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        text = self.log()
        self.stderr.close()
        if self.process.stdout is not None:
            self.process.stdout.close()
        lines = [line for line in text.splitlines() if "images_seen=" in line]
        if not lines:
            return {}
        return dict(item.split("=", 1) for item in lines[-1].split(" ")[-2].split(","))


_began = time.monotonic()


def _phase(name: str) -> None:
    print(f"  {time.monotonic() - _began:5.1f} s  {name}", file=sys.stderr, flush=True)


def _start(context: SpawnContext, target: Any, *args: Any) -> multiprocessing.process.BaseProcess:
    process = context.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def run(quick: bool) -> list[BenchRecord]:
    """The live-stream records (see the module docstring)."""
    seconds = 1.2 if quick else 5.0
    acquire_s, rounds = (0.8, 2) if quick else (3.0, 3)
    global _began
    _began = time.monotonic()
    context = multiprocessing.get_context("spawn")
    directory = tempfile.mkdtemp(prefix="lsb", dir="/tmp")
    stream_address = _free_address()
    config_path = _write_config(directory, stream_address)
    config = load_config(config_path)
    producer_commands, producer_results = context.Queue(), context.Queue()
    read_upto = context.Value("q", 0, lock=False)
    # Every process starts at once (interpreter start-up dominates a quick run).
    producer = _start(context, _producer_process, config_path, producer_commands, producer_results, read_upto)
    stream: _LiveStream | None = _LiveStream(config_path, stream_address)
    subscriber: MetadataSubscriber | None = None
    reader_ring: ImageRing | None = None
    try:
        if producer_results.get(timeout=DEADLINE_S) != "ready":
            raise RuntimeError("the producer did not start")
        subscriber = MetadataSubscriber.for_config(config)
        reader_ring = ImageRing.for_config(config, create=False)
        assert stream is not None
        stream.wait_ready()
        _phase("started")
        ceiling_count, ceiling_seconds = _ceiling(seconds)
        ceiling_hz = rate(ceiling_count - 1, ceiling_seconds)
        _phase("ceiling")

        # Live stream alone: the producer only marks slots written; what reaches the viewer.
        next_id = 1
        viewer = _Probe(stream_address, seconds)
        producer_commands.put(("paced", PACED_RATE_HZ, seconds + 1.0, next_id))
        forward_count, forward_s = viewer.result()
        next_id, _ = producer_results.get(timeout=DEADLINE_S)
        while subscriber.receive(0) is not None:  # the paced phase is not an acquisition
            pass
        forward_hz = rate(forward_count - 1, forward_s)
        _phase("forward")

        # CPU per image at a fixed rate: the live stream, then a raw pyzmq sender.
        cpu_s = 2.0 if quick else 6.0
        viewer = _Probe(stream_address, cpu_s + 60.0)  # counts until a second of silence
        time.sleep(0.3)  # the probe subscribes before the images come
        assert stream is not None
        cpu_before = _cpu_seconds(stream.process.pid)
        producer_commands.put(("paced", CPU_RATE_HZ, cpu_s + 0.5, next_id))
        stream_count, _ = viewer.result()
        cpu_stream = _cpu_seconds(stream.process.pid) - cpu_before
        next_id, _ = producer_results.get(timeout=DEADLINE_S)
        while subscriber.receive(0) is not None:
            pass
        raw_address = _free_address()
        raw_results = context.Queue()
        raw = _start(context, _raw_sender, raw_address, CPU_RATE_HZ, cpu_s + 0.5, raw_results)
        if raw_results.get(timeout=DEADLINE_S) != "ready":
            raise RuntimeError("the raw sender did not start")
        viewer = _Probe(raw_address, cpu_s + 60.0)
        raw_count, _ = viewer.result()
        cpu_raw, raw_sent = raw_results.get(timeout=DEADLINE_S)
        raw.join(DEADLINE_S)
        stream_ms = 1000 * cpu_stream / max(stream_count, 1)
        raw_ms = 1000 * cpu_raw / max(raw_count, 1)
        _phase(f"CPU per image: live stream {stream_ms:.3f} ms ({stream_count} delivered), "
               f"raw pyzmq {raw_ms:.3f} ms ({raw_sent} sent, {raw_count} delivered)")

        # An acquisition with the live stream idle (no viewer: it only reads metadata) and
        # while it forwards every image it can to a viewer; interleaved, best of each.
        alone: list[tuple[int, int, float]] = []
        shared: list[tuple[int, int, float]] = []
        for _ in range(rounds):
            read_upto.value = next_id - 1
            producer_commands.put(("acquire", acquire_s, next_id))
            next_id, read, lost, elapsed = _read_acquisition(
                reader_ring, subscriber, producer_results, read_upto, next_id
            )
            alone.append((read, lost, elapsed))
            viewer = _Probe(stream_address, acquire_s)
            time.sleep(0.3)  # the probe subscribes before the acquisition starts
            read_upto.value = next_id - 1
            producer_commands.put(("acquire", acquire_s, next_id))
            next_id, read, lost, elapsed = _read_acquisition(
                reader_ring, subscriber, producer_results, read_upto, next_id
            )
            shared.append((read, lost, elapsed))
            viewer.result()
        _phase("acquisitions")
        stream_stats = stream.stop()
        stream = None
        counters = ("images_seen", "images_sent", "sent_zero_copy", "skipped_no_viewer", "skipped_behind",
                    "late_images", "torn_images", "torn_on_wire", "viewer_queue_resets",
                    "dropped_slow_viewer", "send_buffers")
        _phase("live stream " + ", ".join(f"{name}={stream_stats.get(name, '?')}" for name in counters))
    finally:
        if stream is not None:
            stream.stop()
        if subscriber is not None:
            subscriber.close()
        if reader_ring is not None:
            reader_ring.close()
        producer_commands.put(("stop",))
        producer.join(DEADLINE_S)
        if producer.is_alive() and producer.pid is not None:
            os.kill(producer.pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)

    alone_hz = max(rate(read, s) for read, _, s in alone)
    shared_hz = max(rate(read, s) for read, _, s in shared)
    lost = sum(lost for _, lost, _ in alone + shared)
    torn = int(stream_stats.get("torn_images", "0i").rstrip("i"))
    torn += int(stream_stats.get("torn_on_wire", "0i").rstrip("i"))
    ceiling_name = "raw pyzmq PUB/SUB tcp zero-copy, same run"
    return [
        record("live_stream forward 2MiB to viewer (images/s)", forward_hz, "images/s",
               ceiling_name, ceiling_hz, lost=torn),
        record("live_stream forward 2MiB to viewer (GB/s)", forward_hz * FRAME_BYTES / GB, "GB/s",
               ceiling_name, ceiling_hz * FRAME_BYTES / GB, lost=torn),
        record("acquisition ring->reader 2MiB, live stream forwarding", shared_hz, "images/s",
               "same acquisition, live stream without viewer", alone_hz, lost=lost),
        record(f"live_stream CPU ms per 2MiB image at {CPU_RATE_HZ:g} Hz", stream_ms, "CPU ms/image",
               "raw pyzmq PUB send of the same frames, same rate, same run", raw_ms, lost=torn),
    ]
