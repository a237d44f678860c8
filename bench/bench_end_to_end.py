"""End to end: fake camera -> receiver -> ring -> driver + writers -> HDF5 on disk, live stream on.

2 MiB frames (1024 x 1024 uint16, the fake camera's Poisson(100) frames), BSREAD over TCP
on 127.0.0.1 into the receiver's 4 PULL connections, 2 writers (files under a temporary
directory in /tmp, deleted after each acquisition), and a live stream in forward mode
with a viewer process reading it (it checks every 25th image pixel by pixel). The stack
runs as in `stddaq up` (stddaq_stack specs and Supervisor); acquisitions go through the
driver's REST API. Everything shares this machine's 2 cores, camera and viewer included.

Lossless sustained rate: the camera streams at a fixed rate; after a warm-up an
acquisition of N images runs. A step passes when
- nothing was lost: lost = ids the camera sent in the acquisition window (first to last
  id the driver dealt) that are not in the files or differ pixel-wise from the camera's
  frame (every image is read back), and at least the driver's `images_missing` (id gaps +
  images whose slot was overwritten first, its missing_ids); a step that loses images is
  stopped early;
- the camera really kept the rate: its timestamps in the files say >= 95 % of the rate
  asked (a PUSH camera waits instead of dropping when the receiver is full);
- the writers kept pace: their lag (images dealt but not yet written, from the driver's
  status) grew by at most 5 % of the images dealt over the second half of the recording
  (judged when that half lasts >= 2 s). A slower writer would lose images once its lag
  passes the ring's 1000 slots; N alone could not show that within minutes.
The search first probes with the camera at full speed (what the pipeline lets it send),
then steps the rate from just below that down until a step passes (or up while steps
pass), then bisects once (full mode). The figure is the camera's achieved rate in the
best passing step (0 if none passed, with its `lost`).

N is 2000 in full mode. Quick mode (N = 400, a probe and up to 2 steps with the live
stream, 1 step at the same rate without; ceilings once; under 60 s) has no pace
criterion (its recordings are too short): it measures a lossless burst, not a sustained
rate.

Ceilings, measured in the same run, before and after the steps (best kept):
- raw pyzmq: the same camera (same frames) at full speed into 4 zero-copy PULL sockets
  that do not touch the data (bench_receiver.ceiling);
- HDF5: one process writing the same frames from memory with direct chunk writes (same
  layout, same disk, file closed; warmed up first), through the page cache;
- HDF5 with write-behind: the same, pushing the written data out of the page cache every
  32 MB as the writers do (services/writer write_behind.py): the same technique in one
  process, the stricter comparison;
- disk: one process writing the same frames with O_DIRECT, no HDF5 (bench/disk_ceiling.py):
  what the disk takes when no page cache is in the way.
Both write the same number of frames as one step: in full mode (4 GB) the page cache
must take new pages as in the steps; quick mode's 0.8 GB fit into memory it already has,
so its HDF5 ceiling is a burst at memory speed no sustained stream can reach.
The live stream's cost: the same search without the live stream and viewer (full mode;
quick mode repeats the live rate), and the CPU seconds per GB of all processes (camera and
viewer included) with and without it.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import bench_receiver, e2e_cost
from bench.e2e_checks import check_files, disk_ceiling_seconds, hdf5_ceiling_seconds
from bench.e2e_stack import BenchStack, ViewerCounts, cpu_delta
from bench.harness import BenchRecord, record
from bench.proc_cpu import CpuTimes, times_delta
from stddaq_fake_camera.frames import DEFAULT_PERIOD
from stddaq_stack.rest_client import DriverError

FRAME_BYTES = 1024 * 1024 * 2
WRITERS = 2
WARMUP_S = 1.0
"""Camera running before the acquisition starts (the stack reaches its steady state)."""
MIN_PACE = 0.95
"""A step passes only if the camera achieved this fraction of the rate asked, and the writers
wrote at least this many images per image dealt in the second half of the recording."""
MIN_PACE_WINDOW_S = 2.0
VIEWER_CHECK_EVERY = 25
POLL_S = 0.25


@dataclass(slots=True)
class Step:
    """One acquisition at one camera rate."""

    rate_hz: float
    n: int
    live: bool
    achieved_fps: float = 0.0
    lost: int = 0
    written: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    cpu: dict[str, Any] = field(default_factory=dict)
    times: dict[str, CpuTimes] = field(default_factory=dict)
    """User and system CPU seconds of each process over the acquisition."""
    camera_sent: int = 0
    writer_pace: float | None = None

    @property
    def passed(self) -> bool:
        """Nothing lost, not stopped, the camera kept its rate and the writers kept pace."""
        kept_pace = self.writer_pace is None or self.writer_pace >= MIN_PACE
        return (self.lost == 0 and not self.stopped_early and kept_pace
                and self.achieved_fps >= MIN_PACE * self.rate_hz)

    @property
    def cpu_per_gb(self) -> float:
        """CPU seconds of every process of the benchmark per GB of images written."""
        gigabytes = self.written * FRAME_BYTES / 1e9
        return sum(self.cpu.values()) / gigabytes if gigabytes else 0.0

    def describe(self) -> str:
        """One line for the log."""
        verdict = "pass" if self.passed else "FAIL"
        pace = "-" if self.writer_pace is None else f"{self.writer_pace:.3f}"
        return (f"#   {'live' if self.live else 'no live'} {self.rate_hz:7.1f} Hz: achieved "
                f"{self.achieved_fps:7.1f} fps, writer pace {pace}, written {self.written}/{self.n}, "
                f"lost {self.lost}"
                f"{' (stopped early)' if self.stopped_early else ''}, CPU {self.cpu_per_gb:.2f} s/GB "
                f"{self.cpu} -> {verdict}")


@dataclass(slots=True)
class Progress:
    """(seconds, images dealt, images written) samples of a recording acquisition."""

    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def writer_pace(self, n: int) -> float | None:
        """1 - growth of the writers' lag (images dealt, not yet written) per image dealt over
        the second half of the recording; None if that half lasted under MIN_PACE_WINDOW_S.

        The lag is taken as its minimum over the first and over the last third of that half,
        so a momentary stall (a flush) does not count, a writer steadily falling behind does.
        """
        half = [sample for sample in self.samples if n / 2 <= sample[1] < n]
        if len(half) < 6 or half[-1][0] - half[0][0] < MIN_PACE_WINDOW_S:
            return None
        third = len(half) // 3
        early, late = half[:third], half[-third:]
        lag_early = min(dealt - written for _, dealt, written in early)
        lag_late = min(dealt - written for _, dealt, written in late)
        dealt = late[-1][1] - early[0][1]
        return 1.0 - (lag_late - lag_early) / max(dealt, 1)


def _wait_for_end(
    stack: BenchStack, acquisition_id: int, timeout_s: float
) -> tuple[dict[str, Any], bool, Progress]:
    """Poll the driver until the acquisition ended; stop it at its first missing image."""
    client = stack.client
    started = time.monotonic()
    progress = Progress()
    stopped = False
    while True:
        status = client.status()
        now = time.monotonic() - started
        if status["acquisition_id"] == acquisition_id and status["outcome"] and not status["busy"]:
            return status, stopped, progress
        if status["state"] == "recording":
            progress.samples.append((now, int(status["images_dealt"]), int(status["images_written"])))
        if not stopped and (status["images_missing"] > 0 or now > timeout_s):
            with contextlib.suppress(DriverError):  # it may be closing its files already
                client.stop()
            stopped = True
        time.sleep(POLL_S)


def acquire(stack: BenchStack, rate_hz: float, n: int, label: str, exact: bool = False) -> Step:
    """One step: camera at `rate_hz`, then an acquisition of n images, checked image by image.

    `exact` (the cost steps): the acquisition starts first, then a camera that sends exactly
    n frames, so every frame handled in the measured window is one of the acquisition's (an
    endless camera also sends while the files close, which the receiver, driver and live
    stream handle and the per-image figures would count against the images written)."""
    step = Step(rate_hz, n, stack.live_running)
    if not exact:
        stack.start_camera(rate_hz)
    try:
        if not exact:
            time.sleep(WARMUP_S)
        directory = stack.data / label
        directory.mkdir()
        cpu_before = stack.cpu_seconds()
        times_before = stack.cpu_times()
        started_at = time.monotonic()
        started = stack.client.start(path=str(directory), n_image=n)
        if exact:
            stack.start_camera(rate_hz, frames=n)
        status, step.stopped_early, progress = _wait_for_end(
            stack, int(started["acquisition_id"]), 3 * n / (rate_hz or 50.0) + 60
        )
        step.writer_pace = progress.writer_pace(n)
        step.seconds = time.monotonic() - started_at
        step.cpu = cpu_delta(cpu_before, stack.cpu_seconds())
        step.times = times_delta(times_before, stack.cpu_times())
    finally:
        step.camera_sent = stack.stop_camera()
    first, last = status["first_image_id"], status["last_image_id"]
    if first is None or last is None:
        step.lost = n
    else:
        check = check_files(status["files"], status["master_file"], stack.detector, first, last)
        step.written = check.good
        step.achieved_fps = check.achieved_fps
        step.lost = max(last - first + 1 - check.good + check.wrong + check.master_mismatch,
                        int(status["images_missing"]))
        if status["outcome"] != "file_saved":
            step.lost = max(step.lost, 1)
    shutil.rmtree(directory, ignore_errors=True)
    if step.lost:
        _print_loss_lines(stack)
    return step


def _print_loss_lines(stack: BenchStack) -> None:
    """The stack log's last lines about missing images or errors (why a step lost some)."""
    stack.log.flush()
    lines = (stack.workdir / "stack.log").read_text(errors="replace").splitlines()
    words = ("missing", "overwritten", "lost", "error", "timeout", "gap")
    for line in [line for line in lines if any(word in line.lower() for word in words)][-8:]:
        print(f"#     log: {line[:300]}", file=sys.stderr, flush=True)


def search(stack: BenchStack, start_hz: float, n: int, max_steps: int, factor: float,
           refine: int, tag: str) -> tuple[Step | None, list[Step]]:
    """The best passing step: from `start_hz`, step down (while failing) or up (while passing)
    by `factor` until the pass/fail boundary is crossed, then bisect it `refine` times."""
    steps: list[Step] = []
    best: Step | None = None
    failed_hz: float | None = None
    rate = start_hz

    def attempt(rate_hz: float) -> Step:
        step = acquire(stack, rate_hz, n, f"{tag}-{len(steps)}")
        steps.append(step)
        print(step.describe(), file=sys.stderr, flush=True)
        return step

    while len(steps) < max_steps:
        step = attempt(rate)
        if step.passed:
            best = step
            if failed_hz is not None:
                break
            rate /= factor
        else:
            failed_hz = rate
            if best is not None:
                break
            rate *= factor
    for _ in range(refine):
        if best is None or failed_hz is None:
            break
        step = attempt((best.rate_hz + failed_hz) / 2)
        if step.passed:
            best = step
        else:
            failed_hz = step.rate_hz
    return best, steps


def find_lossless_rate(
    stack: BenchStack, n: int, cap_hz: float, quick: bool, tag: str
) -> tuple[Step | None, list[Step]]:
    """Probe with the camera at full speed (what the pipeline lets it send), then search
    from below that (and below `cap_hz`): up to 2 steps in quick mode, 5 + 1 in full."""
    probe = acquire(stack, 0.0, n, f"{tag}-probe")
    print(f"#   {tag} probe, camera at full speed: {probe.achieved_fps:.1f} fps, lost {probe.lost}",
          file=sys.stderr, flush=True)
    if quick:  # a short probe overstates (the sockets' queues fill at full speed): start lower
        start_hz = min(0.75 * probe.achieved_fps, cap_hz) or 0.5 * cap_hz
        best, steps = search(stack, start_hz, n, 2, 0.75, 0, tag)
    else:
        start_hz = min(0.95 * probe.achieved_fps, cap_hz) or 0.5 * cap_hz
        best, steps = search(stack, start_hz, n, 5, 0.85, 1, tag)
    return best, [probe, *steps]


@dataclass(slots=True)
class Ceilings:
    """Best same-run ceilings, in frames/s."""

    raw_fps: float = 0.0
    hdf5_fps: float = 0.0
    hdf5_behind_fps: float = 0.0
    disk_fps: float = 0.0

    def measure(self, n: int, workdir: Path, repeats: int) -> None:
        """Measure the ceilings (best of `repeats`) and keep the best so far."""
        hdf5_ceiling_seconds(100, str(workdir / "warmup.h5"))
        for _ in range(repeats):
            raw = bench_receiver.ceiling(n, "none", workdir, DEFAULT_PERIOD)
            self.raw_fps = max(self.raw_fps, raw.fps if raw.lost == 0 else 0.0)
            self.hdf5_fps = max(self.hdf5_fps, n / hdf5_ceiling_seconds(n, str(workdir / "ceiling.h5")))
            self.hdf5_behind_fps = max(
                self.hdf5_behind_fps, n / hdf5_ceiling_seconds(n, str(workdir / "behind.h5"), True)
            )
            self.disk_fps = max(self.disk_fps, n / disk_ceiling_seconds(n, str(workdir / "disk.bin")))
        print(f"#   ceilings: raw pyzmq {self.raw_fps:.0f} fps, HDF5 {self.hdf5_fps:.0f} fps, "
              f"HDF5 + write-behind {self.hdf5_behind_fps:.0f} fps, disk (O_DIRECT) "
              f"{self.disk_fps:.0f} fps", file=sys.stderr, flush=True)


def _fps(step: Step | None) -> float:
    return step.achieved_fps if step is not None else 0.0


def _lost(step: Step | None, steps: list[Step]) -> int:
    return step.lost if step is not None else (steps[-1].lost if steps else 0)


@dataclass(slots=True)
class Outcome:
    """What the searches found."""

    live: tuple[Step | None, list[Step]]
    dark: tuple[Step | None, list[Step]]
    viewer: ViewerCounts | None
    """What the viewer received during all live steps (camera frames sent: live steps' sum)."""
    compare_throughput: bool
    """False when the dark search only repeated the live rate (quick mode)."""
    cost_live: CostSteps
    """The acquisitions at e2e_cost.COST_RATE_HZ with the live stream and viewer on."""
    cost_dark: CostSteps
    """The same without the live stream."""
    camera_live: CostSteps
    """The acquisitions at e2e_cost.CAMERA_RATE_HZ with the live stream and viewer on."""
    camera_dark: CostSteps
    """The same without the live stream."""
    idle: dict[str, float]
    """% of a core each service used with the stack up and nothing flowing."""
    memcpy_s_per_gb: float
    viewer_could_receive: int
    """Frames the camera sent while the viewer was on."""


def _records(ceilings: Ceilings, outcome: Outcome) -> list[BenchRecord]:
    (best, steps), (best_dark, steps_dark) = outcome.live, outcome.dark
    gb = FRAME_BYTES / 1e9
    raw_name = "raw pyzmq PUSH/PULL x4 zero-copy (same camera, same frames)"
    hdf5_name = "1 process direct chunk writes (same frames, same disk)"
    disk_name = "1 process O_DIRECT writes, no HDF5 (same frames, same disk)"
    behind_name = "1 process direct chunk writes + write-behind (same frames, same disk)"
    label = "end-to-end, live stream forward + viewer"
    lost, lost_dark = _lost(best, steps), _lost(best_dark, steps_dark)
    records = [
        record(f"{label}: lossless frames/s", _fps(best), "frames/s", raw_name, ceilings.raw_fps, lost),
        record(f"{label}: lossless GB/s", _fps(best) * gb, "GB/s", hdf5_name, ceilings.hdf5_fps * gb, lost),
        record(f"{label}: lossless GB/s", _fps(best) * gb, "GB/s", behind_name,
               ceilings.hdf5_behind_fps * gb, lost),
        record(f"{label}: lossless GB/s", _fps(best) * gb, "GB/s", disk_name, ceilings.disk_fps * gb, lost),
        record(f"{label}: lossless GB/s", _fps(best) * gb, "GB/s", raw_name, ceilings.raw_fps * gb, lost),
        record("end-to-end, no live stream: lossless GB/s", _fps(best_dark) * gb, "GB/s", hdf5_name,
               ceilings.hdf5_fps * gb, lost_dark),
        record("end-to-end, no live stream: lossless GB/s", _fps(best_dark) * gb, "GB/s", behind_name,
               ceilings.hdf5_behind_fps * gb, lost_dark),
    ]
    if outcome.compare_throughput:
        records.append(record("live stream cost: lossless GB/s with it", _fps(best) * gb, "GB/s",
                              "the same without live stream", _fps(best_dark) * gb, lost))
    if best is not None and best_dark is not None:
        records.append(record("live stream cost: CPU s per GB, all processes, with it", best.cpu_per_gb,
                              "CPU s/GB", "the same without live stream", best_dark.cpu_per_gb, lost))
    viewer = outcome.viewer
    if viewer is not None:
        records.append(record("live stream viewer: images received in the live steps", viewer.received,
                              "images", "images the camera sent in them", outcome.viewer_could_receive,
                              viewer.bad + viewer.backwards))
    return records


COST_REPEATS = 3
"""Cost steps per rate, with and without the live stream (full mode; quick mode: 1). The
headline figure is the step that cost least, as the memcpy yardstick is the best of its
passes: on this shared machine the same work costs up to twice as much CPU from one 10 s
window to the next (the receiver's copy from the kernel, most of all); the median of the
steps is recorded beside it."""


@dataclass(slots=True)
class CostSteps:
    """The cost steps at one rate, with or without the live stream."""

    steps: list[Step]
    live: bool

    def spent(self, step: Step) -> float:
        """CPU s per GB of stddaq's services in `step`."""
        return e2e_cost.spent_s_per_gb(step.times, step.written, FRAME_BYTES, self.live)

    @property
    def best(self) -> Step:
        """The step that cost least of those that lost nothing (of all, if every one lost)."""
        lossless = [step for step in self.steps if not step.lost] or self.steps
        return min(lossless, key=self.spent)

    @property
    def median_spent(self) -> float:
        """The median CPU s per GB over the steps."""
        return statistics.median(self.spent(step) for step in self.steps)

    @property
    def lost(self) -> int:
        """Images lost over all the steps."""
        return sum(step.lost for step in self.steps)


def _cost_steps(stack: BenchStack, n: int, tag: str, repeats: int,
                rate_hz: float = e2e_cost.COST_RATE_HZ) -> CostSteps:
    """`repeats` exact acquisitions of n images at `rate_hz`."""
    costs = CostSteps([], stack.live_running)
    for index in range(repeats):
        step = acquire(stack, rate_hz, n, f"{tag}-{index}", exact=True)
        costs.steps.append(step)
        print(f"#   cost {step.describe()[4:]}; services {costs.spent(step):.3f} CPU s/GB",
              file=sys.stderr, flush=True)
    return costs


def _measure(stack: BenchStack, ceilings: Ceilings, n: int, quick: bool) -> Outcome:
    """Idle CPU, then at a fixed rate and in a lossless-rate search: with the live stream (and
    a viewer), then without."""
    cap_hz = 0.9 * min(ceilings.raw_fps, max(ceilings.hdf5_fps, ceilings.hdf5_behind_fps, ceilings.disk_fps))
    memcpy = e2e_cost.memcpy_cpu_s_per_gb()
    stack.live_on(VIEWER_CHECK_EVERY)
    idle = e2e_cost.idle_percent(stack)
    print(f"#   memcpy {memcpy:.3f} CPU s/GB; idle % of a core: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(idle.items())), file=sys.stderr, flush=True)
    n_cost = 300 if quick else 1000
    n_camera = 600 if quick else 2000
    repeats = 1 if quick else COST_REPEATS
    if not quick:
        acquire(stack, 100.0, 50, "warmup")  # the writers' first files (quick: the probe is it)
    live = find_lossless_rate(stack, n, cap_hz, quick, "live")
    # The cost steps come after the searches: by then every process has touched every page
    # of the ring (first touches cost page faults a running stack does not pay again).
    cost_live = _cost_steps(stack, n_cost, "cost-live", repeats)
    camera_live = _cost_steps(stack, n_camera, "camera-live", repeats, e2e_cost.CAMERA_RATE_HZ)
    viewer = stack.live_off()
    if quick:  # no time for a second search: the same rate, to compare the CPU it costs
        rate = live[0].rate_hz if live[0] is not None else live[1][-1].rate_hz
        dark = search(stack, rate, n, 1, 1.0, 0, "dark")
    else:
        dark = find_lossless_rate(stack, n, cap_hz, quick, "dark")
    cost_dark = _cost_steps(stack, n_cost, "cost-dark", repeats)
    camera_dark = _cost_steps(stack, n_camera, "camera-dark", repeats, e2e_cost.CAMERA_RATE_HZ)
    return Outcome(live, dark, viewer, not quick, cost_live, cost_dark, camera_live, camera_dark,
                   idle, memcpy, stack.sent_while_viewing)


def _cost_records(outcome: Outcome) -> list[BenchRecord]:
    memcpy = outcome.memcpy_s_per_gb
    camera_rate = e2e_cost.CAMERA_RATE_HZ
    camera_at = f" at {camera_rate:g} images/s ({camera_rate * FRAME_BYTES / 1e9:.2f} GB/s)"
    return [
        record("memcpy of 2 MiB frames: CPU s per GB (the copy floor's yardstick)", memcpy, "CPU s/GB"),
        *_rate_records(outcome.cost_live, outcome.cost_dark, memcpy, e2e_cost.COST_RATE_HZ, ""),
        *_rate_records(outcome.camera_live, outcome.camera_dark, memcpy, camera_rate, camera_at),
        *e2e_cost.idle_records(outcome.idle),
    ]


def _rate_records(live: CostSteps, dark: CostSteps, memcpy: float, rate: float, at: str) -> list[BenchRecord]:
    """The cost steps at one rate: the services' CPU s per GB beside the copy floor (named
    "stddaq services{at}: ..."; the step that cost least, and the median over the steps) and
    each service's CPU per image in the step that cost least."""
    records = []
    for costs, label, copies in (
        (live, "with live stream forward + viewer", e2e_cost.COPIES_WITH_LIVE_STREAM),
        (dark, "without live stream", e2e_cost.COPIES_DAQ_SERVER),
    ):
        best = costs.best
        name = f"stddaq services{at}: CPU s per GB, {label}"
        records.append(e2e_cost.floor_record(name, costs.spent(best), copies, memcpy, best.lost))
        if len(costs.steps) > 1:
            records.append(e2e_cost.floor_record(
                f"{name}, median of {len(costs.steps)} steps", costs.median_spent, copies, memcpy,
                costs.lost))
    for costs, label in ((live, ", live stream on"), (dark, ", no live stream")):
        step = costs.best
        service = e2e_cost.service_costs(step.times, step.written, FRAME_BYTES, WRITERS)
        records += e2e_cost.cost_records(service, rate, step.lost, label)
    return records


def run(quick: bool) -> list[BenchRecord]:
    """Ceilings, then the lossless-rate search with and without the live stream."""
    n = 400 if quick else 2000
    workdir = Path(tempfile.mkdtemp(prefix="stddaq-bench-e2e-", dir="/tmp"))
    log_path = workdir / "stack.log"
    log = log_path.open("w")
    ceilings = Ceilings()
    stack: BenchStack | None = None
    try:
        ceilings.measure(n, workdir, 1 if quick else 2)
        stack = BenchStack(workdir, WRITERS, log)
        stack.start()
        outcome = _measure(stack, ceilings, n, quick)
        if not quick:
            ceilings.measure(n, workdir, 1)
    except BaseException:
        log.flush()
        print(f"# end-to-end benchmark failed; end of the stack log {log_path}:", file=sys.stderr)
        print(log_path.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        if stack is not None:
            left = stack.close()
            if left:
                print(f"# removed files the stack left behind: {left}", file=sys.stderr)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return _records(ceilings, outcome) + _cost_records(outcome)
