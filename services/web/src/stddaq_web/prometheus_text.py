"""Reading a Prometheus text exposition (what `--metrics-port` serves) into numbers."""

from __future__ import annotations

import math


def parse_metrics(text: str) -> dict[str, float]:
    """Sample name -> value; samples of one name with several label sets are summed.

    Comment lines and lines that do not parse are skipped (a scrape is best effort)."""
    values: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, _, rest = line.partition("{")
            _, _, rest = rest.rpartition("}")
        else:
            name, _, rest = line.partition(" ")
        fields = rest.split()
        if not name or not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isnan(value):
            continue
        values[name] = values.get(name, 0.0) + value
    return values


def metric(values: dict[str, float], service: str, name: str) -> float | None:
    """`stddaq_<service>_<name>` (counter totals end in `_total`), None if absent."""
    return values.get(f"stddaq_{service}_{name}")
