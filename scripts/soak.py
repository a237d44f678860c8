"""Soak: the whole stack under `stddaq up` for a bounded time at half its capacity, with
acquisitions started and stopped in a loop; reports lost frames (must be 0), the memory of
every service at start and end (must be flat) and their CPU.

    .venv/bin/python scripts/soak.py [--seconds 600] [--rate HZ] [--shape 1024 1024] [--json FILE]
    make soak SOAK_SECONDS=600

The rate is `--rate` (or SOAK_RATE), else half the end-to-end lossless rate in
bench-results.json (`make bench`, same frame size), else half the rate the stack writes
when the camera runs flat out, measured first in the same run. Every acquisition's files
are read back (ids, status, pixels) and deleted; a viewer checks the live stream's
pixels. Exit status 0 only if nothing was lost, memory stayed flat and nothing restarted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stddaq_stack.proc_stats import cpu_seconds, private_rss_bytes  # noqa: E402
from tests.faults.rig import Camera, Stack, Viewer, check_files, wait_for  # noqa: E402

BENCH_RECORD = "end-to-end, live stream forward + viewer: lossless frames/s"
BENCH_SHAPE = (1024, 1024)
FLAT_BYTES = 24 * 2**20
"""Memory is flat if no service grew by more than this (or FLAT_FRACTION of its start)."""
FLAT_FRACTION = 0.10
FIRST_ID = 10_000_000
"""The soak camera's first id, above every id of the calibration."""
MAX_PIXEL_CHECKS = 300
"""Images per acquisition compared pixel by pixel (evenly spread; all if fewer)."""


@dataclass
class ServiceFigures:
    """Memory outside the ring (RSS) and CPU of one service over the soak."""

    name: str
    rss_start_mb: float
    rss_end_mb: float
    cpu_percent: float

    @property
    def flat(self) -> bool:
        grown = (self.rss_end_mb - self.rss_start_mb) * 2**20
        return grown <= max(FLAT_BYTES, FLAT_FRACTION * self.rss_start_mb * 2**20)


@dataclass
class SoakReport:
    """Everything the soak measured."""

    seconds: float
    rate_hz: float
    rate_source: str
    shape: tuple[int, int]
    acquisitions: int = 0
    images_written: int = 0
    lost_frames: int = 0
    problems: list[str] = field(default_factory=list)
    services: list[ServiceFigures] = field(default_factory=list)
    viewer_images: int = 0
    restarts: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.lost_frames == 0
            and not self.problems
            and self.restarts == 0
            and self.acquisitions > 0
            and all(s.flat for s in self.services)
        )


def _arguments() -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=float(env.get("SOAK_SECONDS", "600")))
    parser.add_argument(
        "--rate", type=float, default=float(env.get("SOAK_RATE", "0")), help="0: half capacity"
    )
    parser.add_argument("--shape", type=int, nargs=2, default=BENCH_SHAPE, metavar=("ROWS", "COLUMNS"))
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--acquisition-seconds", type=float, default=10.0)
    parser.add_argument(
        "--calibrate-seconds", type=float, default=8.0, help="flat-out run that measures capacity"
    )
    parser.add_argument("--dir", default=env.get("SOAK_DIR", "/tmp"), help="where the stack writes")
    parser.add_argument("--json", default=env.get("SOAK_JSON"), help="also write the report here")
    parser.add_argument(
        "--log", default=env.get("SOAK_LOG", "/tmp/stddaq-soak.log"), help="the stack's output"
    )
    return parser.parse_args()


def _bench_rate(shape: tuple[int, int]) -> float | None:
    """Half the end-to-end lossless rate of bench-results.json, if it is for this shape."""
    path = REPO / "bench-results.json"
    if shape != BENCH_SHAPE or not path.exists():
        return None
    for entry in json.loads(path.read_text()):
        if entry.get("name") == BENCH_RECORD and float(entry.get("value") or 0) > 0:
            return float(entry["value"]) / 2
    return None


def _calibrate(stack: Stack, seconds: float) -> float:
    """Half the images/s the stack writes while the camera runs as fast as it can."""
    camera = stack.camera("--rate", "0")
    try:
        started = stack.start("calibration")
        first = stack.wait_written(1)
        begin = time.monotonic()
        time.sleep(seconds)
        written = stack.status()["images_written"] - first["images_written"]
        elapsed = time.monotonic() - begin
        stack.client.post("/stop")  # 409 if flat out already ended it (then it measured less)
        stack.wait_end(started["acquisition_id"])
    finally:
        camera.stop()
    shutil.rmtree(stack.data / "calibration", ignore_errors=True)
    return max(1.0, float(written) / elapsed / 2)


def _service_pids(stack: Stack) -> dict[str, int]:
    pids = {name: stack.pid_of(name) for name in stack.services()}
    if stack.process is not None:
        pids["stddaq up"] = stack.process.pid
    return pids


def _check_acquisition(stack: Stack, status: dict[str, Any], report: SoakReport) -> None:
    """Count what was lost in one acquisition: missing images, and any wrong pixel or id."""
    report.acquisitions += 1
    report.images_written += int(status["images_written"])
    lost = int(status["images_missing"])
    if status["outcome"] != "file_saved":
        report.problems.append(
            f"acquisition {status['acquisition_id']}: {status['outcome']}: {status['last_error']}"
        )
    every = max(1, int(status["images_dealt"]) // MAX_PIXEL_CHECKS)
    try:  # the writer files (reading through the master's virtual dataset is much slower)
        check = check_files(list(status["files"]), stack.detector, stack.pattern, every=every)
    except AssertionError as error:
        report.problems.append(f"acquisition {status['acquisition_id']}: {error}")
        return
    ids = sorted(check.ids)
    gaps = sum(b - a - 1 for a, b in itertools.pairwise(ids))
    lost = max(lost, len(check.missing_ids) + gaps, int(status["images_dealt"]) - len(check.written_ids))
    report.lost_frames += lost
    if lost:
        report.problems.append(
            f"acquisition {status['acquisition_id']}: {lost} lost ({status['id_gaps']} ids never "
            f"published, {status['images_not_written']} not written, first missing "
            f"{status['missing_ids'][:5]}, ids {ids[0] if ids else None}..{ids[-1] if ids else None})"
        )


def soak(args: argparse.Namespace) -> SoakReport:
    """Run the stack, the camera and the acquisition loop; the report."""
    shape = (args.shape[0], args.shape[1])
    base = Path(tempfile.mkdtemp(prefix="stddaq-soak-", dir=args.dir))
    stack = Stack(base, height=shape[0], width=shape[1], writers=args.writers)
    camera: Camera | None = None
    viewer: Viewer | None = None
    try:
        stack.up()
        rate, source = args.rate, "--rate"
        if rate <= 0:
            bench = _bench_rate(shape)
            rate, source = (
                (bench, "half of bench-results.json")
                if bench
                else (_calibrate(stack, args.calibrate_seconds), "half of calibration")
            )
        report = SoakReport(args.seconds, round(rate, 1), source, shape)
        print(
            f"soak: {args.seconds:g} s at {rate:.1f} images/s ({source}), frames {shape[0]}x{shape[1]}",
            flush=True,
        )
        camera = stack.camera("--rate", f"{rate:.3f}", "--first-id", str(FIRST_ID))
        viewer = Viewer(str(stack.live_address), stack.pattern)
        wait_for(
            "the soak camera's frames published",
            lambda: stack.last_stats("receiver").get("last_published_id", 0) >= FIRST_ID + rate,
        )
        pids = _service_pids(stack)
        start_rss: dict[str, float] = {}
        start_cpu = {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
        began = time.monotonic()
        end = began + args.seconds
        while time.monotonic() < end:
            name = f"acq{report.acquisitions + 1}"
            started = stack.start(name)
            time.sleep(min(args.acquisition_seconds, max(1.0, end - time.monotonic())))
            stack.stop()
            status = stack.wait_end(started["acquisition_id"])
            _check_acquisition(stack, status, report)
            shutil.rmtree(stack.data / name, ignore_errors=True)
            if not start_rss:  # memory at start: after the first acquisition (warm)
                start_rss = {name: (private_rss_bytes(pid) or 0) / 2**20 for name, pid in pids.items()}
            print(f"soak: {report.acquisitions} acquisitions, {report.images_written} images, "
                  f"{report.lost_frames} lost", flush=True)  # fmt: skip
        elapsed = time.monotonic() - began
        for name, pid in pids.items():
            rss = (private_rss_bytes(pid) or 0) / 2**20
            cpu = ((cpu_seconds(pid) or 0.0) - start_cpu[name]) / elapsed * 100
            report.services.append(
                ServiceFigures(name, round(start_rss.get(name, rss), 1), round(rss, 1), round(cpu, 1))
            )
        report.restarts = sum(1 for line in stack.lines if "[stack]" in line and " restarted (pid" in line)
        wrong = viewer.close().wrong
        viewer_seen = viewer.report.good
        viewer = None
        report.viewer_images = viewer_seen
        if wrong:
            report.problems.append(f"the live stream sent {len(wrong)} wrong images, e.g. {wrong[:5]}")
        camera.stop()
        camera = None
        if stack.down() != 0:
            report.problems.append("stddaq up did not stop cleanly")
        leftovers = stack.leftovers()
        if leftovers:
            report.problems.append(f"left behind: {leftovers}")
        return report
    finally:
        if viewer is not None:
            viewer.close()
        if camera is not None:
            camera.stop()
        stack.cleanup()
        if stack.log_path.exists():
            shutil.copy(stack.log_path, args.log)
        shutil.rmtree(base, ignore_errors=True)


def print_report(report: SoakReport) -> None:
    """The report as a table, then one JSON line."""
    print(f"\nsoak {'PASSED' if report.ok else 'FAILED'}: {report.seconds:g} s at {report.rate_hz} images/s "
          f"({report.rate_source}), {report.shape[0]}x{report.shape[1]}")  # fmt: skip
    print(f"acquisitions {report.acquisitions}, images written {report.images_written}, "
          f"lost frames {report.lost_frames}, live stream images checked {report.viewer_images}, "
          f"restarts {report.restarts}")  # fmt: skip
    print(f"{'service':<12}{'RSS start MB':>14}{'RSS end MB':>12}{'flat':>6}{'CPU %':>8}")
    for s in report.services:
        flat = "yes" if s.flat else "NO"
        print(f"{s.name:<12}{s.rss_start_mb:>14.1f}{s.rss_end_mb:>12.1f}{flat:>6}{s.cpu_percent:>8.1f}")
    for problem in report.problems:
        print(f"problem: {problem}")
    summary = asdict(report)
    summary["ok"] = report.ok
    summary["memory_flat"] = all(s.flat for s in report.services)
    print("SOAK " + json.dumps(summary), flush=True)


def main() -> int:
    args = _arguments()
    report = soak(args)
    print_report(report)
    if args.json:
        summary = asdict(report)
        summary["ok"] = report.ok
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
