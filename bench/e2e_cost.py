"""What stddaq's services cost: CPU per image and per GB at a fixed rate, the copy floor, idle.

- Per service (receiver, driver, each writer, live stream): CPU ms per image and CPU s per
  GB, user and system apart, from /proc/<pid>/stat over one acquisition at `COST_RATE_HZ`
  (a rate every step of the search sustains here), with the live stream and viewer on.
  The receiver, driver and live stream handle every image; a writer its share (images are
  dealt round-robin, so images / writers).
- The copy floor (docs/architecture.md, "Copy floor"): the copies of each byte the design
  needs, 3 on the DAQ server (kernel -> zmq message, message -> ring slot, slot -> page
  cache) and 5 with the live stream (+ slot -> send buffer, send buffer -> kernel), times
  this run's memcpy CPU cost per GB. A fixed yardstick: removing a copy shows as a higher
  ratio = floor / spent.
- The same at `CAMERA_RATE_HZ`, a camera's data rate: CPU per GB falls with the rate,
  since the cost per wake-up is shared by the images it finds.
- Idle: the CPU each service uses with the stack up and nothing flowing, as % of one core
  over `IDLE_WINDOW_S` (target under 1 %).
"""

from __future__ import annotations

import mmap
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.harness import BenchRecord, record
from bench.proc_cpu import CpuTimes, times_delta

COST_RATE_HZ = 100.0
"""The fixed rate of the cost acquisitions (0.21 GB/s of 2 MiB images): the headline
figures. At this rate every image is its own wake-up in every process."""
CAMERA_RATE_HZ = 500.0
"""A second fixed rate, a PCO.edge camera's data rate (500 images/s of 2 MiB = 1.05 GB/s):
what a DAQ server pays per GB while it keeps up with such a camera (records named
"... at 500 images/s"). Each process then finds several images per wake-up."""
IDLE_WINDOW_S = 10.0
IDLE_TARGET_PERCENT = 1.0
COPIES_DAQ_SERVER = 3
COPIES_WITH_LIVE_STREAM = 5
SERVICES = ("receiver", "driver", "writer-", "live-")
"""Names (or name prefixes) of stddaq's own services among the benchmark's processes."""


def is_service(name: str) -> bool:
    """True for stddaq's services (not the fake camera, not the viewer)."""
    return any(name == s or (s.endswith("-") and name.startswith(s)) for s in SERVICES)


def memcpy_cpu_s_per_gb(repeats: int = 3, frame_bytes: int = 2 * 2**20) -> float:
    """CPU seconds per GB of one memcpy (`np.copyto`) of 2 MiB frames into a pre-faulted
    256 MiB /dev/shm mapping, as the receiver copies into its ring (from 32 distinct source
    frames, 64 MiB: both far beyond the caches); best (lowest) of `repeats` passes of 1 GiB."""
    path = f"/dev/shm/stddaq-bench-memcpy-{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.unlink(path)
        os.ftruncate(fd, 256 * 2**20)
        memory = mmap.mmap(fd, 256 * 2**20)
    finally:
        os.close(fd)
    try:
        target = np.frombuffer(memory, np.uint8).reshape(-1, frame_bytes)
        target[:] = 1
        source = np.random.default_rng(1).integers(0, 255, 32 * frame_bytes, np.uint8).reshape(32, -1)
        copies = 2 * len(target)
        best = float("inf")
        for _ in range(repeats):
            started = time.process_time()
            for index in range(copies):
                np.copyto(target[index % len(target)], source[index % len(source)])
            best = min(best, (time.process_time() - started) / (copies * frame_bytes / 1e9))
        del target
    finally:
        memory.close()
    return best


def idle_percent(stack: Any, seconds: float = IDLE_WINDOW_S) -> dict[str, float]:
    """% of one core each service of a running stack used over `seconds` with nothing flowing."""
    before = stack.cpu_times()
    time.sleep(seconds)
    delta = times_delta(before, stack.cpu_times())
    return {name: 100.0 * t.total / seconds for name, t in delta.items() if is_service(name)}


@dataclass(frozen=True, slots=True)
class ServiceCost:
    """One service's CPU over the images (and bytes) it handled."""

    name: str
    images: float
    gigabytes: float
    cpu: CpuTimes

    def ms_per_image(self, part: float) -> float:
        """`part` CPU seconds (user, system or total) as ms per image."""
        return 1e3 * part / self.images if self.images else 0.0

    @property
    def s_per_gb(self) -> float:
        """CPU seconds per GB handled."""
        return self.cpu.total / self.gigabytes if self.gigabytes else 0.0


def service_costs(
    cpu: dict[str, CpuTimes], written: int, frame_bytes: int, writers: int
) -> list[ServiceCost]:
    """Each service's cost over an acquisition of `written` images."""
    costs = []
    for name in sorted(n for n in cpu if is_service(n)):
        images = written / writers if name.startswith("writer-") else float(written)
        costs.append(ServiceCost(name, images, images * frame_bytes / 1e9, cpu[name]))
    return costs


def spent_s_per_gb(cpu: dict[str, CpuTimes], written: int, frame_bytes: int, live: bool) -> float:
    """CPU seconds of stddaq's services (with or without the live stream) per GB of images."""
    total = sum(t.total for n, t in cpu.items() if is_service(n) and (live or not n.startswith("live-")))
    gigabytes = written * frame_bytes / 1e9
    return total / gigabytes if gigabytes else 0.0


def floor_record(name: str, spent: float, copies: int, memcpy_s_per_gb: float, lost: int) -> BenchRecord:
    """`name` = CPU s per GB spent, beside the copy floor; ratio = floor / spent."""
    floor = copies * memcpy_s_per_gb
    return BenchRecord(name, spent, "CPU s/GB", f"copy floor: {copies} copies x same-run memcpy",
                       floor, floor / spent if spent else None, lost)


def cost_records(
    costs: list[ServiceCost], rate_hz: float, lost: int, live_label: str
) -> list[BenchRecord]:
    """Per service: ms per image (user, system) and CPU s per GB."""
    records = []
    for cost in costs:
        prefix = f"service CPU at {rate_hz:g} images/s{live_label}, {cost.name}"
        records += [
            record(f"{prefix}: ms per image, user", cost.ms_per_image(cost.cpu.user), "ms/image", lost=lost),
            record(f"{prefix}: ms per image, system", cost.ms_per_image(cost.cpu.system), "ms/image",
                   lost=lost),
            record(f"{prefix}: CPU s per GB", cost.s_per_gb, "CPU s/GB", lost=lost),
        ]
    return records


def idle_records(idle: dict[str, float]) -> list[BenchRecord]:
    """Idle CPU of each service beside the 1 % target (ratio <= 1 meets it)."""
    return [record(f"idle CPU (stack up, nothing flowing, {IDLE_WINDOW_S:g} s): {name}", value,
                   "% of a core", "target", IDLE_TARGET_PERCENT)
            for name, value in sorted(idle.items())]
