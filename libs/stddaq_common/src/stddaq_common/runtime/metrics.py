"""Prometheus exposition of a service's Stats, read at scrape time.

No prometheus_client object is touched on the hot path: a custom collector reads the
plain counter and gauge values of one `Stats` whenever the endpoint is scraped. Names:
`stddaq_<service>_<counter>_total` (counter), `stddaq_<service>_<counter>_rate` (gauge: the
rate over the last stats period), `stddaq_<service>_<gauge>` (gauge); every sample carries
the label `detector` (plus the Stats' extra tags). String gauges are not exposed.
Each Stats gets its own CollectorRegistry, never the process-global one.

Prometheus wants base units spelled out (`promtool check metrics`), while the stats line
keeps short names: a gauge named with an abbreviated unit is exposed in the base unit,
`_us`/`_ms`/`_s` as `_seconds` (value scaled), `_per_s` as `_per_second`
(`last_write_latency_us` -> `last_write_latency_seconds`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from stddaq_common.runtime.stats import Stats

_NOT_IN_METRIC_NAME = re.compile(r"[^a-zA-Z0-9_]")

_UNIT_SUFFIXES: tuple[tuple[str, str, float], ...] = (
    ("_per_s", "_per_second", 1.0),
    ("_us", "_seconds", 1e-6),
    ("_ms", "_seconds", 1e-3),
    ("_s", "_seconds", 1.0),
)


def base_unit_name(name: str) -> tuple[str, float]:
    """The Prometheus name of a stats field and the factor its value is scaled by."""
    for suffix, replacement, scale in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)] + replacement, scale
    return name, 1.0


def metric_prefix(service: str) -> str:
    """`stddaq_<service>_` with characters Prometheus does not allow replaced by `_`."""
    return f"stddaq_{_NOT_IN_METRIC_NAME.sub('_', service)}_"


class StatsCollector(Collector):  # type: ignore[misc]
    """Yields the current values of one Stats as Prometheus metric families."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def describe(self) -> list[Any]:
        """Nothing to describe up front: the registry must not collect at registration."""
        return []

    def collect(self) -> Iterator[Any]:
        """One family per counter, counter rate, numeric gauge and own counter, read now."""
        stats = self.stats
        prefix = metric_prefix(stats.service)
        label_names = list(stats.tags)
        label_values = list(stats.tags.values())
        rates = stats.rates
        for name, counter in list(stats.counters.items()):
            total = CounterMetricFamily(prefix + name, counter.help, labels=label_names)
            total.add_metric(label_values, int(counter.value))
            yield total
            rate = GaugeMetricFamily(
                f"{prefix}{name}_rate",
                f"{counter.help} per second, over the last stats period",
                labels=label_names,
            )
            rate.add_metric(label_values, float(rates.get(name, 0.0)))
            yield rate
        for name, gauge in list(stats.gauges.items()):
            value = gauge.value
            if isinstance(value, str):
                continue
            exposed, scale = base_unit_name(name)
            family = GaugeMetricFamily(prefix + exposed, gauge.help, labels=label_names)
            family.add_metric(label_values, float(value) * scale)
            yield family
        for name, counter in list(stats.own_counters.items()):
            total = CounterMetricFamily(prefix + name, counter.help, labels=label_names)
            total.add_metric(label_values, int(counter.value))
            yield total


def stats_registry(stats: Stats) -> CollectorRegistry:
    """A fresh registry that holds only the collector of `stats`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats))
    return registry


METRICS_CONTENT_TYPE: str = CONTENT_TYPE_LATEST
"""The content type of `metrics_text` (Prometheus' text exposition format)."""


def metrics_text(stats: Stats) -> bytes:
    """The current values of `stats` in Prometheus' text format (for another HTTP server,
    such as the driver's REST port, to serve at `/metrics`)."""
    return bytes(generate_latest(stats_registry(stats)))


class MetricsServer:
    """A small HTTP server exposing one Stats at `/metrics`; stop it with `close()`."""

    def __init__(self, stats: Stats, *, port: int = 0, addr: str = "127.0.0.1") -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"metrics port {port} is outside 0..65535")
        self.registry = stats_registry(stats)
        self.addr = addr
        self._server, self._thread = start_http_server(port, addr, registry=self.registry)
        self.port: int = int(self._server.server_port)
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        """The scrape URL (`http://addr:port/metrics`)."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
