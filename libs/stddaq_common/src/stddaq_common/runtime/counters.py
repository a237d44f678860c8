"""Counters and gauges: plain Python values a service updates on its hot path.

A `Counter` is a plain int that only grows (`counter.inc()` or `counter.value += n`): no
lock, no allocation, no Prometheus object is touched per frame. Readers (the stats line,
the metrics endpoint) read `.value` when they need it. A `Gauge` holds the latest value of
one kind (int, float, bool or str), fixed when it is created, so the InfluxDB field type of
a gauge never changes between lines.
"""

from __future__ import annotations

import numbers
import re

GaugeValue = int | float | bool | str
GaugeKind = type[int] | type[float] | type[bool] | type[str]

_METRIC_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def check_metric_name(name: str, what: str = "metric") -> str:
    """Return `name` if it is usable as a field and metric name (`[a-z_][a-z0-9_]*`)."""
    if not _METRIC_NAME.match(name):
        raise ValueError(f"{what} name {name!r} must match [a-z_][a-z0-9_]* (lower case)")
    return name


def gauge_kind(value: object) -> GaugeKind:
    """The kind a gauge created with `value` keeps: bool, str, int (any integral) or float."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, str):
        return str
    if isinstance(value, numbers.Integral):
        return int
    return float


class Counter:
    """A monotonically growing integer; `inc()` is one plain int add."""

    __slots__ = ("help", "name", "value")

    def __init__(self, name: str, help: str = "") -> None:
        self.name = check_metric_name(name, "counter")
        self.help = help or name.replace("_", " ")
        self.value = 0

    def inc(self, n: int = 1) -> None:
        """Add `n` (default 1) to the counter."""
        self.value += n

    def __repr__(self) -> str:
        return f"Counter({self.name!r}, value={self.value})"


class Gauge:
    """The latest value of something (a queue depth, a temperature, a state name)."""

    __slots__ = ("help", "kind", "name", "value")

    def __init__(self, name: str, help: str = "", initial: GaugeValue = 0.0) -> None:
        self.name = check_metric_name(name, "gauge")
        self.help = help or name.replace("_", " ")
        self.kind: GaugeKind = gauge_kind(initial)
        self.value: GaugeValue = self.kind(initial)

    def set(self, value: GaugeValue) -> None:
        """Store `value`, converted to the gauge's kind (the kind of its initial value)."""
        try:
            self.value = self.kind(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"gauge {self.name}: cannot store {value!r} in a {self.kind.__name__} gauge"
            ) from None

    def __repr__(self) -> str:
        return f"Gauge({self.name!r}, value={self.value!r})"
