"""A tiny service for the runner tests: counts loop turns, writes marker files.

Run as `python example_service.py CONFIG --marker-dir DIR [--fail-startup] [--fail-run]
[--hold-close]`; with --hold-close, close() waits (up to 60 s) until DIR/release exists.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from stddaq_common.config.model import DaqConfig
from stddaq_common.runtime.runner import StartupError, main_for
from stddaq_common.runtime.stats import Stats


class ExampleService:
    """Counts loop turns until stopped; records run/close in marker files."""

    def __init__(
        self, marker_dir: Path, stats: Stats, hold_close: bool, fail_run: bool = False
    ) -> None:
        self.marker_dir = marker_dir
        self.stats = stats
        self.turns = stats.counter("turns", "loop turns")
        self.hold_close = hold_close
        self.fail_run = fail_run

    def run(self, stop: threading.Event) -> None:
        (self.marker_dir / "running").write_text("yes")
        if self.fail_run:
            raise RuntimeError("a bug in run()")
        while not stop.wait(0.02):
            self.turns.inc()
            self.stats.maybe_emit()

    def close(self) -> None:
        (self.marker_dir / "closing").write_text("yes")
        deadline = time.monotonic() + 60
        while self.hold_close and time.monotonic() < deadline:
            if (self.marker_dir / "release").exists():
                break
            time.sleep(0.01)
        (self.marker_dir / "closed").write_text(str(self.turns.value))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--marker-dir", type=Path, required=True)
    parser.add_argument("--fail-startup", action="store_true")
    parser.add_argument("--hold-close", action="store_true")
    parser.add_argument("--fail-run", action="store_true")


def build(config: DaqConfig, args: argparse.Namespace, stats: Stats) -> ExampleService:
    if args.fail_startup:
        raise StartupError(f"camera {config.detector_name} is not reachable at tcp://nowhere:1")
    return ExampleService(args.marker_dir, stats, args.hold_close, args.fail_run)


main = main_for("example", build, add_arguments)

if __name__ == "__main__":
    main()
