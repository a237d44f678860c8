"""What the page shows about the stack, gathered once a second through existing interfaces.

Sources (nothing else; no service is imported):
- the driver's REST API: `GET /api/v1/status` (state, progress, files, each writer's
  written and not-written counts and whether it was heard lately) and `/api/v1/stats`;
- the Prometheus endpoints of services started with `--metrics-port` (given to the web
  service as `--metrics NAME=URL`): the receiver's frames, missing ids and rejected frames,
  each writer's counters, the live stream's viewers;
- the web service's own live-stream subscription (the image id and when it came).

What none of them exposes is named in `not_exposed`, and the page says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from stddaq_web.prometheus_text import metric, parse_metrics

log = logging.getLogger("stddaq.web.health")

HISTORY = 10
"""Finished acquisitions the page lists."""


@dataclass
class Sources:
    """Where the poller looks."""

    driver_url: str
    metrics: dict[str, str] = field(default_factory=dict)
    """Service name (receiver, writer-0, live-0, ...) -> its /metrics URL."""
    ring_slots: int = 0


@dataclass
class _Rate:
    """A counter's rate from two successive readings."""

    last_value: float | None = None
    last_time: float = 0.0
    rate: float | None = None

    def update(self, value: float | None, now: float) -> float | None:
        if value is None:
            self.last_value, self.rate = None, None
            return None
        if self.last_value is not None and now > self.last_time and value >= self.last_value:
            self.rate = (value - self.last_value) / (now - self.last_time)
        self.last_value, self.last_time = value, now
        return self.rate


def _kind(name: str) -> str:
    """The service kind of a supervised name: writer-1 -> writer, live-0 -> live_stream."""
    base = name.split("-", 1)[0]
    return {"live": "live_stream"}.get(base, base)


def writer_lag(images_dealt: int, n_writers: int, index: int, written: int, not_written: int) -> int:
    """Images dealt to writer `index` (image i goes to i % n) that it has not yet finished."""
    dealt = max(0, -(-(images_dealt - index) // n_writers)) if n_writers else 0
    return max(0, dealt - written - not_written)


def acquisition_entry(status: dict[str, Any]) -> dict[str, Any]:
    """The history line of a finished acquisition."""
    return {
        key: status.get(key)
        for key in (
            "acquisition_id",
            "outcome",
            "path",
            "file_prefix",
            "n_image",
            "images_written",
            "images_missing",
            "files",
            "master_file",
            "started_at",
            "finished_at",
            "last_error",
        )
    }


class HealthPoller:
    """Polls the driver and the metrics endpoints in a thread; `snapshot()` is the latest."""

    def __init__(self, sources: Sources, period: float = 1.0, timeout: float = 2.0) -> None:
        self.sources = sources
        self.period = period
        self._client = httpx.Client(timeout=timeout)
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {
            "time": time.time(),
            "driver": {"up": False, "error": "not polled yet"},
        }
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._seen_finished: set[int] = set()
        self._rates: dict[str, _Rate] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="web-health", daemon=True)
        self.polls = 0

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._client.close()

    def snapshot(self) -> dict[str, Any]:
        """The latest health and status (JSON-able)."""
        with self._lock:
            return self._snapshot

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                snapshot = self.poll()
            except Exception as error:  # a bug here must not end the polling
                log.exception("health poll failed")
                snapshot = {"time": time.time(), "driver": {"up": False, "error": f"poll failed: {error}"}}
            with self._lock:
                self._snapshot = snapshot
            self.polls += 1
            self._stop.wait(self.period)

    def _get_json(self, url: str) -> tuple[Any, str | None]:
        try:
            answer = self._client.get(url)
            answer.raise_for_status()
            return answer.json(), None
        except (httpx.HTTPError, ValueError) as error:
            return None, _describe(error)

    def _scrape(self, url: str) -> tuple[dict[str, float] | None, str | None]:
        try:
            answer = self._client.get(url)
            answer.raise_for_status()
            return parse_metrics(answer.text), None
        except httpx.HTTPError as error:
            return None, _describe(error)

    def _rate(self, key: str, value: float | None, now: float) -> float | None:
        return self._rates.setdefault(key, _Rate()).update(value, now)

    def poll(self) -> dict[str, Any]:
        """One round: ask every source, build the snapshot."""
        now = time.time()
        base = self.sources.driver_url.rstrip("/") + "/api/v1"
        status, status_error = self._get_json(base + "/status")
        stats, _ = self._get_json(base + "/stats") if status is not None else (None, None)
        scraped = {name: self._scrape(url) for name, url in sorted(self.sources.metrics.items())}
        if status is not None:
            self._remember(status)
        services = [
            {
                "name": "driver",
                "up": status is not None,
                "how": "REST /api/v1/status",
                "error": status_error,
            }
        ]
        for name, (values, error) in scraped.items():
            services.append({"name": name, "up": values is not None, "how": "metrics", "error": error})
        if status is not None:
            for writer in status.get("writers", []):
                name = f"writer-{writer['index']}"
                if name not in scraped:
                    services.append(
                        {
                            "name": name,
                            "up": bool(writer.get("alive")),
                            "how": "driver: heard lately",
                            "error": None,
                        }
                    )
            seen = status.get("receiver")
            if "receiver" not in scraped and isinstance(seen, dict) and seen.get("alive") is not None:
                services.append(
                    {
                        "name": "receiver",
                        "up": bool(seen["alive"]),
                        "how": "driver: its metadata socket",
                        "error": seen.get("problem"),
                    }
                )
        acquisition_rate = None
        if status is not None and status.get("busy"):
            key = f"acquisition-{status.get('acquisition_id')}.written"
            acquisition_rate = self._rate(key, float(status.get("images_written") or 0), now)
        return {
            "time": now,
            "driver": {"up": status is not None, "error": status_error, "url": self.sources.driver_url},
            "acquisition_rate_hz": acquisition_rate,
            "status": status,
            "driver_stats": _driver_numbers(stats),
            "services": services,
            "receiver": self._receiver(scraped, now),
            "writers": self._writers(status, scraped, now),
            "ring": self._ring(status),
            "live_viewers": _live_viewers(scraped),
            "history": list(self._history),
            "not_exposed": self._not_exposed(scraped),
        }

    def _remember(self, status: dict[str, Any]) -> None:
        ident = int(status.get("acquisition_id") or 0)
        if (
            ident
            and status.get("outcome")
            and status.get("state") == "idle"
            and ident not in self._seen_finished
        ):
            self._seen_finished.add(ident)
            self._history.appendleft(acquisition_entry(status))

    def _receiver(
        self, scraped: dict[str, tuple[dict[str, float] | None, str | None]], now: float
    ) -> dict[str, Any]:
        values, _ = scraped.get("receiver", (None, None))
        if values is None:
            return {"exposed": "receiver" in scraped, "up": False}
        received = metric(values, "receiver", "frames_received_total")
        rejected = sum(
            v for k, v in values.items() if k.startswith("stddaq_receiver_rejected_") and k.endswith("_total")
        )
        return {
            "exposed": True,
            "up": True,
            "frames_received": received,
            "rate_hz": self._rate("receiver.frames_received", received, now),
            "frames_published": metric(values, "receiver", "frames_published_total"),
            "missing_ids": metric(values, "receiver", "missing_ids_total"),
            "rejected": rejected,
            "duplicates": metric(values, "receiver", "duplicates_total"),
            "publish_dropped": metric(values, "receiver", "publish_dropped_total"),
            "last_published_id": metric(values, "receiver", "last_published_id"),
        }

    def _writers(
        self,
        status: dict[str, Any] | None,
        scraped: dict[str, tuple[dict[str, float] | None, str | None]],
        now: float,
    ) -> list[dict[str, Any]]:
        if status is None:
            return []
        writers = status.get("writers", [])
        dealt = int(status.get("images_dealt") or 0)
        rows = []
        for writer in writers:
            index = int(writer["index"])
            written, not_written = int(writer["images_written"]), int(writer["images_not_written"])
            values, _ = scraped.get(f"writer-{index}", (None, None))
            total = metric(values, "writer", "images_written_total") if values else None
            latency = metric(values, "writer", "last_write_latency_us") if values else None
            rows.append(
                {
                    "index": index,
                    "alive": bool(writer.get("alive")),
                    "state": writer.get("state"),
                    "images_written": written,
                    "images_not_written": not_written,
                    "lag": writer_lag(dealt, len(writers), index, written, not_written),
                    "rate_hz": self._rate(f"writer-{index}.written", total, now),
                    "last_write_latency_us": latency,
                    "last_error": writer.get("last_error"),
                }
            )
        return rows

    def _ring(self, status: dict[str, Any] | None) -> dict[str, Any]:
        slots = self.sources.ring_slots
        if status is None or not slots:
            return {"slots": slots, "fill": None, "overruns": None}
        pending = int(status.get("images_dealt") or 0) - int(status.get("images_written") or 0)
        pending -= int(status.get("images_not_written") or 0)
        return {
            "slots": slots,
            "waiting": max(0, pending),
            "fill": max(0, pending) / slots,
            "overruns": int(status.get("images_not_written") or 0),
        }

    def _not_exposed(self, scraped: dict[str, tuple[dict[str, float] | None, str | None]]) -> list[str]:
        missing = [
            "ring fill is derived: images dealt to the writers and not yet written, of the ring's slots",
            "overruns are the driver's images_not_written (a slot overwritten before its writer read it)",
        ]
        if "receiver" not in scraped:
            missing.append(
                "receiver rate, missing and rejected frames: the receiver's metrics endpoint was not "
                "given (start it with --metrics-port and the web service with --metrics receiver=URL)"
            )
        if not any(_kind(name) == "live_stream" for name in scraped):
            missing.append("live-stream viewers: no live-stream metrics endpoint was given")
        return missing


def _live_viewers(scraped: dict[str, tuple[dict[str, float] | None, str | None]]) -> list[dict[str, Any]]:
    rows = []
    for name, (values, _) in scraped.items():
        if _kind(name) != "live_stream":
            continue
        rows.append(
            {
                "name": name,
                "viewers": metric(values, "live_stream", "viewers") if values else None,
                "images_sent": metric(values, "live_stream", "images_sent_total") if values else None,
                "dropped_slow_viewer": metric(values, "live_stream", "dropped_slow_viewer_total")
                if values
                else None,
            }
        )
    return rows


def _driver_numbers(stats: Any) -> dict[str, Any]:
    if not isinstance(stats, dict):
        return {}
    keys = (
        "write_images_per_s",
        "write_throughput_bytes_per_s",
        "id_gaps",
        "images_not_written",
        "images_written",
    )
    return {key: stats.get(key) for key in keys if key in stats}


def _describe(error: Exception) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]
