"""Run every benchmark module (bench/bench_*.py), print a table, write bench-results.json.

Usage: python -m bench.run [--quick] [--only NAME ...] [--out bench-results.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import traceback
from pathlib import Path

import bench
from bench.harness import QUICK, BenchRecord


def _format_value(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def print_table(records: list[BenchRecord]) -> None:
    """Print the records as an aligned table."""
    header = ("benchmark", "value", "unit", "ceiling", "ceiling value", "ratio", "lost")
    rows = [
        (
            r.name,
            _format_value(r.value),
            r.unit,
            r.ceiling_name or "-",
            _format_value(r.ceiling_value),
            "-" if r.ratio is None else f"{r.ratio:.2f}",
            "-" if r.lost is None else str(r.lost),
        )
        for r in records
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; exit 1 if one of them failed to run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", default=QUICK, help="short mode (<1 min)")
    parser.add_argument("--only", nargs="*", default=None, help="module names (e.g. bench_ring)")
    parser.add_argument("--out", default="bench-results.json")
    args = parser.parse_args(argv)
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if n in args.only]
    records: list[BenchRecord] = []
    failed = []
    for name in names:
        print(f"# {name} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            records.extend(module.run(args.quick))
        except Exception:
            traceback.print_exc()
            failed.append(name)
    print_table(records)
    Path(args.out).write_text(json.dumps([r.as_json() for r in records], indent=2) + "\n")
    print(f"wrote {args.out} ({len(records)} records)")
    if failed:
        print("benchmarks that failed to run: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
