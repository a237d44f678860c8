"""Benchmark records: every figure beside its ceiling measured in the same run, as a ratio.

A benchmark module `bench/bench_<topic>.py` defines `run(quick: bool) -> list[BenchRecord]`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


@dataclass(frozen=True, slots=True)
class BenchRecord:
    """One figure of bench-results.json: value beside the same-run ceiling."""

    name: str
    value: float
    unit: str
    ceiling_name: str | None
    ceiling_value: float | None
    ratio: float | None
    lost: int | None

    def as_json(self) -> dict[str, Any]:
        """The record as written to bench-results.json."""
        return asdict(self)


def record(
    name: str,
    value: float,
    unit: str,
    ceiling_name: str | None = None,
    ceiling_value: float | None = None,
    lost: int | None = None,
) -> BenchRecord:
    """Make a record; ratio = value / ceiling_value where there is a ceiling."""
    ratio = value / ceiling_value if ceiling_value else None
    return BenchRecord(name, value, unit, ceiling_name, ceiling_value, ratio, lost)


def best_of(repeats: int, measure: Callable[[], float]) -> float:
    """The best of `repeats` measurements (higher is better): the machine is noisy."""
    return max(measure() for _ in range(repeats))


def rate(count: float, seconds: float) -> float:
    """count per second, guarding against a zero interval."""
    return count / max(seconds, 1e-9)


class Stopwatch:
    """Context manager measuring wall-clock seconds with perf_counter."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
