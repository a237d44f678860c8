"""The driver's counters and gauges, registered once in the service's Stats.

Engine-side counters are only changed by the dealing thread, web-side counters only by the
web thread (its event loop), so every counter has a single writer.
"""

from __future__ import annotations

from dataclasses import dataclass

from stddaq_common.runtime.stats import Counter, Gauge, Stats


@dataclass(frozen=True, slots=True)
class EngineCounters:
    """Counted by the image-dealing thread."""

    images_dealt: Counter
    id_gaps: Counter
    repeated_ids: Counter
    bad_metadata: Counter
    images_written: Counter
    images_not_written: Counter
    bytes_written: Counter
    acquisitions_started: Counter
    acquisitions_saved: Counter
    acquisitions_failed: Counter
    writer_bad_events: Counter
    write_throughput_bytes_per_s: Gauge
    write_images_per_s: Gauge
    write_latency_s: Gauge
    state: Gauge


@dataclass(frozen=True, slots=True)
class WebCounters:
    """Counted by the web thread: every refused request has its counter."""

    requests_invalid: Counter
    starts_refused_busy: Counter
    paths_refused: Counter
    starts_refused_writers: Counter
    stops_refused: Counter
    config_changes: Counter
    config_changes_refused: Counter
    auth_refused: Counter
    ws_clients_connected: Counter
    ws_bad_messages: Counter


def engine_counters(stats: Stats) -> EngineCounters:
    """Register (or fetch) the dealing thread's counters and gauges."""
    return EngineCounters(
        images_dealt=stats.counter("images_dealt", "images handed to the writers"),
        id_gaps=stats.counter("id_gaps", "image ids never published during acquisitions"),
        repeated_ids=stats.counter("repeated_ids", "images skipped because their id repeated"),
        bad_metadata=stats.counter("bad_metadata", "metadata messages without a readable id"),
        images_written=stats.counter("images_written", "images the writers wrote"),
        images_not_written=stats.counter(
            "images_not_written", "images a writer could not write (slot overwritten first)"
        ),
        bytes_written=stats.counter("bytes_written", "image bytes the writers wrote"),
        acquisitions_started=stats.counter("acquisitions_started", "acquisitions started"),
        acquisitions_saved=stats.counter("acquisitions_saved", "acquisitions ending file_saved"),
        acquisitions_failed=stats.counter("acquisitions_failed", "acquisitions ending in error"),
        writer_bad_events=stats.counter(
            "writer_bad_events", "writer messages that did not follow the protocol"
        ),
        write_throughput_bytes_per_s=stats.gauge(
            "write_throughput_bytes_per_s", "bytes written per second (last second)", initial=0.0
        ),
        write_images_per_s=stats.gauge(
            "write_images_per_s", "images written per second (last second)", initial=0.0
        ),
        write_latency_s=stats.gauge(
            "write_latency_s", "mean write latency per image the writers report", initial=0.0
        ),
        state=stats.gauge("state", "acquisition state", initial="idle"),
    )


def web_counters(stats: Stats) -> WebCounters:
    """Register (or fetch) the web thread's counters."""
    return WebCounters(
        requests_invalid=stats.counter(
            "requests_invalid", "REST requests refused for a bad body (422, 413)"
        ),
        starts_refused_busy=stats.counter("starts_refused_busy", "starts refused: busy"),
        paths_refused=stats.counter("paths_refused", "starts refused: path not allowed"),
        starts_refused_writers=stats.counter(
            "starts_refused_writers", "starts refused: writers not running or file exists"
        ),
        stops_refused=stats.counter("stops_refused", "stops refused: nothing running"),
        config_changes=stats.counter("config_changes", "config changes applied"),
        config_changes_refused=stats.counter("config_changes_refused", "config changes refused"),
        auth_refused=stats.counter("auth_refused", "state-changing requests without a valid token"),
        ws_clients_connected=stats.counter("ws_clients_connected", "WebSocket clients connected"),
        ws_bad_messages=stats.counter("ws_bad_messages", "WebSocket messages refused"),
    )
