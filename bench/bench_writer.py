"""Writer throughput: ring -> writer process -> HDF5 on disk, beside same-run ceilings.

2 MiB frames (1024x1024 uint16, Poisson(100) pixels, 16 distinct frames cycled). This
process owns the ring and acts as producer and driver (docs/driver-writer-protocol.md);
three writer processes run (writer 0 in "view" read mode, writer 1 in "copy" mode, both
with the default `--io direct`: uncompressed images go out with O_DIRECT; writer 2 in
"view" mode with `--io buffered`: through HDF5 and the page cache with write-behind) and
each acquisition uses one of them. The writer's CPU per image (user and system, from
/proc/<pid>/stat over the acquisition) is recorded for O_DIRECT against buffered and for
bitshuffle-lz4. Flow control keeps at most WINDOW images in flight,
far below the ring's 1000 slots, so a run is lossless by construction unless the writer
misses images (counted in `lost`). A run is timed from the first image sent to the
`closed` event (file flushed and closed).

Ceilings, measured in the same run on the same frames and disk (/tmp):
- raw: one process writing the frames from memory with direct chunk writes into the
  same layout (set_extent + write_direct_chunk per frame, close), through the page cache;
- raw with write-behind: the same, pushing the data out of the page cache every 32 MB as
  the writer does (services/writer write_behind.py);
- disk: one process writing the frames with O_DIRECT, no HDF5 (bench/disk_ceiling.py):
  what the disk takes when no page cache is in the way;
- compressed: bitshuffle+LZ4 compression speed of the same frames in one thread
  (stddaq_common.wire.compression, what the writer uses), and one process compressing and
  writing them with direct chunk writes.
Runs alternate (ceiling, pipeline, ...) and the best of each is kept: the disk is noisy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers filter 32008)
import numpy as np
import zmq

from bench.disk_ceiling import aligned_copies, direct_write_seconds
from bench.harness import BenchRecord, Stopwatch, rate, record
from bench.proc_cpu import CpuTimes, cpu_times
from stddaq_common.bus.driver_writer import (
    CloseCommand,
    ConfirmCommand,
    CreateCommand,
    WriterEvent,
    driver_address,
    encode_command,
    encode_image,
    parse_response,
    writer_address,
)
from stddaq_common.bus.metadata import Dtype, ImageMeta, PcoInfo, encode_image_metadata
from stddaq_common.config.model import parse_config
from stddaq_common.names import shm_name
from stddaq_common.ring.geometry import ring_geometry
from stddaq_common.ring.image_ring import ImageRing
from stddaq_common.testing.configs import pco_config
from stddaq_common.wire.compression import bitshuffle_lz4_compress_into, bitshuffle_lz4_max_size
from stddaq_writer.write_behind import DEFAULT_WINDOW_BYTES, WriteBehind

HEIGHT, WIDTH = 1024, 1024
FRAME_BYTES = HEIGHT * WIDTH * 2
N_DISTINCT = 16
WINDOW = 256
REPO = Path(__file__).resolve().parents[1]
DISK_CEILING = "1 process O_DIRECT writes, no HDF5 (same frames, same disk)"


def make_frames() -> list[np.ndarray[Any, Any]]:
    """Distinct Poisson(100) frames (compress ~2.5x, like real camera data)."""
    rng = np.random.default_rng(7)
    return [rng.poisson(100, (HEIGHT, WIDTH)).astype("<u2") for _ in range(N_DISTINCT)]


def ceiling_raw(frames: list[np.ndarray[Any, Any]], n: int, path: str, write_behind: bool = False) -> float:
    """Seconds for one process to write n frames with direct chunk writes (same layout);
    with `write_behind`, pushing them out of the page cache as the writer does."""
    with Stopwatch() as watch, h5py.File(path, "w", libver=("v110", "v110")) as h5:
        data = h5.create_dataset(
            "D/data", shape=(0, HEIGHT, WIDTH), maxshape=(None, HEIGHT, WIDTH),
            chunks=(1, HEIGHT, WIDTH), dtype="<u2",
        )
        behind = WriteBehind(path, DEFAULT_WINDOW_BYTES if write_behind else 0)
        for i in range(n):
            data.id.set_extent((i + 1, HEIGHT, WIDTH))
            data.id.write_direct_chunk((i, 0, 0), frames[i % N_DISTINCT])
            behind.wrote(FRAME_BYTES)
        behind.close()
    os.unlink(path)
    return watch.seconds


def ceiling_compressed_write(frames: list[np.ndarray[Any, Any]], n: int, path: str) -> float:
    """Seconds for one process to compress n frames and write them as direct chunks."""
    out = np.empty(bitshuffle_lz4_max_size(HEIGHT * WIDTH, 2), np.uint8)
    with Stopwatch() as watch, h5py.File(path, "w", libver=("v110", "v110")) as h5:
        data = h5.create_dataset(
            "D/data", shape=(0, HEIGHT, WIDTH), maxshape=(None, HEIGHT, WIDTH),
            chunks=(1, HEIGHT, WIDTH), dtype="<u2", compression=32008, compression_opts=(0, 2),
        )
        for i in range(n):
            size = bitshuffle_lz4_compress_into(frames[i % N_DISTINCT], out)
            data.id.set_extent((i + 1, HEIGHT, WIDTH))
            data.id.write_direct_chunk((i, 0, 0), out[:size])
    os.unlink(path)
    return watch.seconds


def compression_speed(frames: list[np.ndarray[Any, Any]], n: int) -> float:
    """Seconds to compress n frames in one thread (bitshuffle+LZ4)."""
    out = np.empty(bitshuffle_lz4_max_size(HEIGHT * WIDTH, 2), np.uint8)
    with Stopwatch() as watch:
        for i in range(n):
            bitshuffle_lz4_compress_into(frames[i % N_DISTINCT], out)
    return watch.seconds


class BenchDriver:
    """Producer (ring owner) and driver of the writer processes."""

    def __init__(self, workdir: Path, frames: list[np.ndarray[Any, Any]]) -> None:
        self.workdir = workdir
        self.frames = frames
        self.detector = f"benchw{os.getpid()}"
        config = pco_config(
            self.detector, HEIGHT, WIDTH, number_of_writers=3, ipc_dir=str(workdir),
            stats_collection_period=60, log_level="warning",
        )  # fmt: skip
        self.config_path = workdir / "daq.json"
        self.config_path.write_text(json.dumps(config))
        parsed = parse_config(config)
        self.ring = ImageRing.create(shm_name(self.detector), ring_geometry(parsed))
        self.context = zmq.Context()
        self.pushes = []
        self.events = self.context.socket(zmq.PULL)  # connected to every writer's answers
        self.events.setsockopt(zmq.LINGER, 0)
        for k in range(3):
            push = self.context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.setsockopt(zmq.SNDTIMEO, 30_000)
            push.bind(driver_address(self.detector, k, str(workdir)))
            self.pushes.append(push)
            self.events.connect(writer_address(self.detector, k, str(workdir)))
        self.writers = [
            subprocess.Popen(
                [sys.executable, "-m", "stddaq_writer", str(self.config_path), "--index", str(k),
                 "--read-mode", mode, "--io", io],
                cwd=REPO, stdout=subprocess.DEVNULL,
            )
            for k, (mode, io) in enumerate((("view", "direct"), ("copy", "direct"), ("view", "buffered")))
        ]
        self.acq_id = 0
        self.next_image = 0
        self.last_cpu = CpuTimes()
        """The writer's CPU over the last acquisition (create to closed)."""
        ready = {self.wait("ready", probe=True).writer for _ in range(3)}
        assert ready == {0, 1, 2}

    def wait(self, kind: str, timeout: float = 60.0, probe: bool = False) -> WriterEvent:
        """The next event of `kind` (others are dropped); `probe`: probe the writers meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if probe:
                for push in self.pushes:
                    with contextlib.suppress(zmq.Again):
                        push.send(encode_command(ConfirmCommand(probe=True)), zmq.NOBLOCK)
            if self.events.poll(100):
                event = parse_response(self.events.recv()).event
                assert event is not None
                if event.event == "error":
                    raise RuntimeError(f"writer error: {event.reason}")
                if event.event == kind:
                    return event
        raise TimeoutError(f"no {kind} event in {timeout} s")

    def acquisition(self, writer: int, n: int, compression: str) -> tuple[float, int]:
        """Write n frames through writer `writer`; (seconds, images lost)."""
        self.acq_id += 1
        path = self.workdir / f"run{self.acq_id}.h5"
        create = CreateCommand(
            path=str(path), uid=0, acq_id=self.acq_id, file=str(path),
            compression=compression,  # type: ignore[arg-type]
            writer_index=writer, n_writers=1,
        )
        push = self.pushes[writer]
        cpu_before = cpu_times(self.writers[writer].pid) or CpuTimes()
        push.send(encode_command(create))
        self.wait("file_created")
        done = 0
        meta = ImageMeta(0, HEIGHT, WIDTH, FRAME_BYTES, Dtype.UINT16, detail=PcoInfo(0, 0, "x"))
        with Stopwatch() as watch:
            for index in range(n):
                while index - done >= WINDOW:
                    if self.events.poll(50):
                        event = parse_response(self.events.recv()).event
                        assert event is not None
                        if event.event == "error":
                            raise RuntimeError(f"writer error: {event.reason}")
                        if event.event == "progress":
                            done = (event.written or 0) + (event.missing or 0)
                image_id = self.next_image
                self.next_image += 1
                self.ring.write(image_id, self.frames[image_id % N_DISTINCT])
                meta.image_id = image_id
                push.send(encode_image(encode_image_metadata(meta), self.acq_id, index))
            push.send(encode_command(CloseCommand(self.acq_id, n)))
            closed = self.wait("closed")
        self.last_cpu = (cpu_times(self.writers[writer].pid) or CpuTimes()) - cpu_before
        path.unlink()
        return watch.seconds, int(closed.missing or 0)

    def close(self) -> None:
        """Stop the writers by pid, close sockets and the ring."""
        for process in self.writers:
            process.terminate()
        for process in self.writers:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for push in self.pushes:
            push.close(0)
        self.events.close(0)
        self.context.term()
        self.ring.close()


def run(quick: bool) -> list[BenchRecord]:
    """The writer benchmark records."""
    n = 300 if quick else 1000
    repeats = 3
    gigabytes = n * FRAME_BYTES / 1e9
    frames = make_frames()
    workdir = Path(tempfile.mkdtemp(prefix="stddaq-bench-writer-", dir="/tmp"))
    driver: BenchDriver | None = None
    best: dict[str, float] = {}
    lost: dict[str, int] = {}
    cpu: dict[str, CpuTimes] = {}

    def keep(name: str, seconds: float, missing: int = 0) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)
        lost[name] = lost.get(name, 0) + missing

    try:
        driver = BenchDriver(workdir, frames)
        keep("compress", compression_speed(frames, n))
        ceiling_path = str(workdir / "ceiling.h5")
        pipeline = driver
        aligned = aligned_copies(frames)

        def measure(name: str) -> tuple[float, int]:
            if name == "ceiling_raw":
                return ceiling_raw(frames, n, ceiling_path), 0
            if name == "ceiling_behind":
                return ceiling_raw(frames, n, ceiling_path, write_behind=True), 0
            if name == "ceiling_disk":
                return direct_write_seconds(aligned, n, str(workdir / "disk.bin")), 0
            if name == "ceiling_bslz4":
                return ceiling_compressed_write(frames, n, ceiling_path), 0
            writer, compression = {"view": (0, "none"), "copy": (1, "none"), "buffered": (2, "none")}.get(
                name, (0, "bitshuffle_lz4")
            )
            result = pipeline.acquisition(writer, n, compression)
            if name not in cpu or pipeline.last_cpu.total < cpu[name].total:
                cpu[name] = pipeline.last_cpu  # the least CPU of the repeats (noise only adds)
            return result

        runs = ["ceiling_raw", "view", "ceiling_behind", "ceiling_disk", "copy", "ceiling_bslz4", "bslz4",
                "buffered"]
        for repetition in range(repeats):  # rotate the order: no kind always runs first
            shift = repetition % len(runs)
            for name in runs[shift:] + runs[:shift]:
                seconds, missing = measure(name)
                keep(name, seconds, missing)
                print(f"#   {name}: {rate(gigabytes, seconds):.2f} GB/s", file=sys.stderr)
    finally:
        if driver is not None:
            driver.close()
        shutil.rmtree(workdir, ignore_errors=True)

    def gbps(name: str) -> float:
        return rate(gigabytes, best[name])

    def fps(name: str) -> float:
        return rate(n, best[name])

    ceiling = "1 process direct chunk writes (same frames, same disk)"
    return [
        record("writer raw (view mode) frames/s", fps("view"), "frames/s", ceiling,
               fps("ceiling_raw"), lost["view"]),
        record("writer raw (view mode) GB/s", gbps("view"), "GB/s", ceiling,
               gbps("ceiling_raw"), lost["view"]),
        record("writer raw (view mode) GB/s", gbps("view"), "GB/s",
               "1 process direct chunk writes + write-behind (same frames, same disk)",
               gbps("ceiling_behind"), lost["view"]),
        record("writer raw (view mode) GB/s", gbps("view"), "GB/s", DISK_CEILING,
               gbps("ceiling_disk"), lost["view"]),
        record("writer raw (copy mode) GB/s", gbps("copy"), "GB/s", ceiling,
               gbps("ceiling_raw"), lost["copy"]),
        record("writer bitshuffle-lz4 frames/s", fps("bslz4"), "frames/s",
               "1 process compress + direct chunk writes", fps("ceiling_bslz4"), lost["bslz4"]),
        record("writer bitshuffle-lz4 GB/s (raw bytes in)", gbps("bslz4"), "GB/s",
               "bitshuffle-lz4 compression, 1 thread", gbps("compress"), lost["bslz4"]),
        record("writer raw (--io buffered + write-behind) GB/s", gbps("buffered"), "GB/s",
               "1 process direct chunk writes + write-behind (same frames, same disk)",
               gbps("ceiling_behind"), lost["buffered"]),
        *_cpu_records(cpu, n, lost),
    ]


def _cpu_records(cpu: dict[str, CpuTimes], n: int, lost: dict[str, int]) -> list[BenchRecord]:
    """The writer's CPU per image: O_DIRECT beside buffered (ratio < 1: O_DIRECT costs
    less), user and system apart, and bitshuffle-lz4."""
    def ms(times: CpuTimes) -> float:
        return 1e3 * times.total / n

    buffered = "the same with --io buffered (HDF5 + page cache + write-behind)"
    records = [
        record("writer CPU per image, raw, O_DIRECT from the slot (view mode)", ms(cpu["view"]),
               "ms/image", buffered, ms(cpu["buffered"]), lost["view"]),
        record("writer CPU per image, raw, O_DIRECT from a copy (copy mode)", ms(cpu["copy"]),
               "ms/image", buffered, ms(cpu["buffered"]), lost["copy"]),
        record("writer CPU per image, bitshuffle-lz4 (compressed by the writer)", ms(cpu["bslz4"]),
               "ms/image", lost=lost["bslz4"]),
    ]
    for name, label in (("view", "O_DIRECT"), ("buffered", "--io buffered"), ("bslz4", "bitshuffle-lz4")):
        records += [
            record(f"writer CPU per image, {label}: user", 1e3 * cpu[name].user / n, "ms/image"),
            record(f"writer CPU per image, {label}: system", 1e3 * cpu[name].system / n, "ms/image"),
        ]
    return records
