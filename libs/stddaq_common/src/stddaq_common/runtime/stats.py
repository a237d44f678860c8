"""Per-service statistics: counters, gauges, rates and one InfluxDB line per period.

A service creates one `Stats`, registers its counters and gauges once, updates them on
its hot path (plain int adds), and calls `maybe_emit()` from its loop. At most once per
period that computes every counter's rate over the period (`<name>_rate`, a float), logs
one InfluxDB 1.x line-protocol line on the logger `stddaq.stats` and, if an InfluxDB URL
is configured, hands the line to a background poster (never blocking the caller). The same
values are served to Prometheus by `serve_metrics()` (see stddaq_common.runtime.metrics).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from stddaq_common.runtime.counters import Counter, Gauge, GaugeValue
from stddaq_common.runtime.line_protocol import FieldValue, format_line
from stddaq_common.runtime.std_daq_fields import StdDaqField, std_daq_values

if TYPE_CHECKING:
    # Imported where used: prometheus_client and urllib cost a service's start, and most
    # services run without a metrics port or an InfluxDB URL.
    from stddaq_common.runtime.influx import InfluxPoster
    from stddaq_common.runtime.metrics import MetricsServer

__all__ = ["Counter", "Gauge", "Stats"]

STATS_LOGGER = "stddaq.stats"
_log = logging.getLogger(STATS_LOGGER)

_TAG_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class Stats:
    """Counters and gauges of one service, with rates, line protocol and metrics."""

    def __init__(
        self,
        service: str,
        detector: str,
        *,
        period: float,
        influx_url: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        if not service:
            raise ValueError("stats: the service name must not be empty")
        if not period > 0:
            raise ValueError(f"stats: period must be > 0 seconds, got {period}")
        self.service = service
        self.detector = detector
        self.period = float(period)
        self.tags: dict[str, str] = {"detector": detector}
        for key, value in (tags or {}).items():
            if not _TAG_KEY.match(key) or key == "detector":
                raise ValueError(
                    f"stats: tag key {key!r} must match [a-zA-Z_][a-zA-Z0-9_]* and must not be 'detector'"
                )
            self.tags[key] = str(value)
        format_line(service, self.tags, [("check", 0)], 0)  # a bad name or tag fails here
        self._counters: dict[str, Counter] = {}
        self._own_counters: dict[str, Counter] = {}  # the runner's (influx_*), listed last
        self._gauges: dict[str, Gauge] = {}
        self._rates: dict[str, float] = {}
        self._emit_lock = threading.Lock()
        self._last_values: dict[str, int] = {}
        self._last_emit = time.monotonic()
        self._metrics_server: MetricsServer | None = None
        self._std_daq_fields: tuple[StdDaqField, ...] = ()
        self.poster: InfluxPoster | None = None
        if influx_url:
            from stddaq_common.runtime.influx import InfluxPoster  # lazy: see the imports at the top

            self.poster = InfluxPoster(
                influx_url,
                posted=self._own_counter("influx_posted_lines", "stats lines InfluxDB accepted"),
                failed=self._own_counter("influx_failed_posts", "failed POSTs to InfluxDB"),
                dropped=self._own_counter(
                    "influx_dropped_lines", "stats lines given up (queue full, rejected, exit)"
                ),
            )

    # --- registration (once, at startup) ---

    def _check_free(self, *names: str) -> None:
        """Refuse a name that would clash in the line (`x_rate`) or in Prometheus (`x_total`)."""
        taken = set(self._gauges) | set(self._counters) | set(self._own_counters)
        for counter in self._counters:
            taken |= {f"{counter}_rate", f"{counter}_total"}
        for name in names:
            if name in taken:
                raise ValueError(f"stats {self.service}: the field name {name!r} is already used")

    def counter(self, name: str, help: str = "") -> Counter:
        """Register a counter (or return the one registered under `name`)."""
        existing = self._counters.get(name)
        if existing is not None:
            return existing
        if name.endswith("_total"):
            raise ValueError(
                f"stats {self.service}: counter {name!r}: leave out '_total', "
                "Prometheus exposition appends it"
            )
        self._check_free(name, f"{name}_rate", f"{name}_total")
        counter = Counter(name, help)
        self._counters[name] = counter
        self._last_values[name] = 0
        self._rates[name] = 0.0
        return counter

    def gauge(self, name: str, help: str = "", *, initial: GaugeValue = 0.0) -> Gauge:
        """Register a gauge whose kind (int, float, bool, str) is that of `initial`."""
        existing = self._gauges.get(name)
        if existing is not None:
            return existing
        self._check_free(name)
        gauge = Gauge(name, help, initial)
        self._gauges[name] = gauge
        return gauge

    def _own_counter(self, name: str, help: str) -> Counter:
        """A counter of the stats machinery itself: no rate, listed after the service's."""
        self._check_free(name, f"{name}_total")
        counter = Counter(name, help)
        self._own_counters[name] = counter
        return counter

    @property
    def counters(self) -> Mapping[str, Counter]:
        """The service's counters by name, in registration order."""
        return self._counters

    @property
    def own_counters(self) -> Mapping[str, Counter]:
        """Counters of the stats machinery (InfluxDB delivery), without rates."""
        return self._own_counters

    @property
    def gauges(self) -> Mapping[str, Gauge]:
        """The registered gauges by name, in registration order."""
        return self._gauges

    @property
    def rates(self) -> Mapping[str, float]:
        """Per-second rate of each counter over the last period (6 significant digits)."""
        return self._rates

    def add_std_daq_fields(self, wanted: tuple[StdDaqField, ...]) -> None:
        """Also write these std_daq field names (see runtime.std_daq_fields) in every line."""
        self._std_daq_fields = wanted

    # --- values, rates and lines ---

    def fields(self) -> list[tuple[str, FieldValue]]:
        """Name and value of every counter and its rate, every gauge, std_daq's names of
        some of them, then own counters."""
        rates = self._rates
        fields: list[tuple[str, FieldValue]] = []
        for name, counter in list(self._counters.items()):
            fields.append((name, int(counter.value)))
            fields.append((f"{name}_rate", rates.get(name, 0.0)))
        fields.extend((name, gauge.value) for name, gauge in list(self._gauges.items()))
        if self._std_daq_fields:
            fields.extend(std_daq_values(dict(fields), self._std_daq_fields))
        fields.extend((name, int(c.value)) for name, c in list(self._own_counters.items()))
        return fields

    def line_protocol(self, now_ns: int | None = None) -> str | None:
        """The current values as one InfluxDB line (None if there are no fields yet)."""
        stamp = time.time_ns() if now_ns is None else now_ns
        return format_line(self.service, self.tags, self.fields(), stamp)

    def _update_rates(self, now: float) -> None:
        elapsed = now - self._last_emit
        rates: dict[str, float] = {}
        values: dict[str, int] = {}
        for name, counter in list(self._counters.items()):
            value = int(counter.value)
            delta = value - self._last_values.get(name, 0)
            rates[name] = float(f"{delta / elapsed:.6g}") if elapsed > 0 else 0.0
            values[name] = value
        self._rates = rates
        self._last_values = values
        self._last_emit = now

    def maybe_emit(self, now: float | None = None) -> str | None:
        """Emit one line if a period has passed since the last one (`now`: monotonic s)."""
        moment = time.monotonic() if now is None else now
        if moment - self._last_emit < self.period:
            return None
        return self.emit_now(moment)

    def emit_now(self, now: float | None = None) -> str | None:
        """Update the rates, log the line on `stddaq.stats` and queue it for InfluxDB.

        The log record also carries the fields as `extra={"stats": {...}}`, so the JSON log
        format gives Filebeat/Elasticsearch structured values next to the line.
        """
        with self._emit_lock:
            self._update_rates(time.monotonic() if now is None else now)
            fields = self.fields()
        line = format_line(self.service, self.tags, fields, time.time_ns())
        if line is None:
            return None
        structured = {
            name: value for name, value in fields if not isinstance(value, float) or math.isfinite(value)
        }
        _log.info(line, extra={"stats": structured})
        if self.poster is not None:
            self.poster.post(line)
        return line

    # --- metrics endpoint and shutdown ---

    def serve_metrics(self, port: int = 0, addr: str = "127.0.0.1") -> int:
        """Serve Prometheus metrics on `addr:port` (0: a free port); return the bound port."""
        if self._metrics_server is not None:
            raise RuntimeError(f"stats {self.service}: the metrics endpoint is already served")
        from stddaq_common.runtime.metrics import MetricsServer  # lazy: see the imports at the top

        server = MetricsServer(self, port=port, addr=addr)
        self._metrics_server = server
        return server.port

    @property
    def metrics_port(self) -> int | None:
        """The bound metrics port, or None when metrics are not served."""
        server = self._metrics_server
        return None if server is None else server.port

    def close(self, timeout: float = 5.0) -> None:
        """Stop the metrics endpoint and deliver queued lines (waiting at most `timeout` s)."""
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            server.close()
        if self.poster is not None:
            self.poster.close(timeout)
