"""Scaling with cores: the end-to-end lossless rate with every process pinned to 1 core, then 2.

Usage: python -m bench.scale_cores [--quick] [--live] [--out bench-scaling.json]

Each run is a child process started under `taskset -c <cpus>` (the stack's services, the
fake camera and the viewer inherit the affinity) that runs bench_end_to_end's lossless-rate
search (probe at full speed, then steps; without the live stream unless --live) and prints
the best passing step. The figures are records as in `make bench`: the 1-core rate with
the 2-core rate as its ceiling (ratio = 1-core / 2-core; 0.5 would be perfect scaling),
and the CPU s per GB of stddaq's services in both. On a machine shared with other work
the figures are noisy: compare ratios, repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import e2e_cost
from bench.bench_end_to_end import FRAME_BYTES, VIEWER_CHECK_EVERY, WRITERS, find_lossless_rate
from bench.e2e_stack import BenchStack
from bench.harness import QUICK, BenchRecord, record
from bench.run import print_table

CAP_HZ = 10_000.0
"""No cap from ceilings here: the probe at full speed sets where the search starts."""


def inner(quick: bool, live: bool) -> dict[str, Any]:
    """One search in this process's affinity; its best step as a dict."""
    n = 400 if quick else 2000
    workdir = Path(tempfile.mkdtemp(prefix="stddaq-bench-scale-", dir="/tmp"))
    log = (workdir / "stack.log").open("w")
    stack = BenchStack(workdir, WRITERS, log)
    try:
        stack.start()
        if live:
            stack.live_on(VIEWER_CHECK_EVERY)
        best, steps = find_lossless_rate(stack, n, CAP_HZ, quick, "scale")
    finally:
        stack.close()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if best is None:
        return {"fps": 0.0, "lost": steps[-1].lost if steps else 0, "s_per_gb": 0.0}
    return {
        "fps": best.achieved_fps,
        "lost": best.lost,
        "s_per_gb": e2e_cost.spent_s_per_gb(best.times, best.written, FRAME_BYTES, live),
        "services": {n: [t.user, t.system] for n, t in best.times.items() if e2e_cost.is_service(n)},
        "written": best.written,
    }


def pinned(cpus: str, quick: bool, live: bool) -> dict[str, Any]:
    """Run `inner` in a child pinned to `cpus` (taskset list, e.g. "0" or "0,1")."""
    argv = ["taskset", "-c", cpus, sys.executable, "-m", "bench.scale_cores", "--inner"]
    argv += ["--quick"] if quick else []
    argv += ["--live"] if live else []
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"the run pinned to cpus {cpus} failed (exit {result.returncode})")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def records(one: dict[str, Any], two: dict[str, Any], live: bool) -> list[BenchRecord]:
    """The 1-core figures beside the 2-core ones."""
    label = "end-to-end, live stream forward + viewer" if live else "end-to-end, no live stream"
    gb = FRAME_BYTES / 1e9
    return [
        record(f"{label}, pinned to 1 core: lossless GB/s", one["fps"] * gb, "GB/s",
               "the same pinned to 2 cores", two["fps"] * gb, one["lost"]),
        record(f"{label}, pinned to 2 cores: lossless GB/s", two["fps"] * gb, "GB/s", lost=two["lost"]),
        record(f"{label}, pinned to 1 core: stddaq services CPU s per GB", one["s_per_gb"], "CPU s/GB",
               "the same pinned to 2 cores", two["s_per_gb"], one["lost"]),
    ]


def main(argv: list[str] | None = None) -> int:
    """Both pinned runs (or, with --inner, one search in this affinity)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", default=QUICK)
    parser.add_argument("--live", action="store_true", help="with the live stream and a viewer")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="bench-scaling.json")
    args = parser.parse_args(argv)
    if args.inner:
        print(json.dumps(inner(args.quick, args.live)), flush=True)
        return 0
    if len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None:
        print("needs 2 cores and taskset (util-linux)", file=sys.stderr)
        return 1
    cpus = sorted(os.sched_getaffinity(0))[:2]
    one = pinned(str(cpus[0]), args.quick, args.live)
    two = pinned(f"{cpus[0]},{cpus[1]}", args.quick, args.live)
    results = records(one, two, args.live)
    print_table(results)
    for label, run in (("1 core", one), ("2 cores", two)):
        print(f"{label}: per-service CPU s (user, system) over {run.get('written', 0)} images: "
              f"{run.get('services', {})}")
    Path(args.out).write_text(json.dumps([r.as_json() for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
