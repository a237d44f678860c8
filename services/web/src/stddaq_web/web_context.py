"""What every route and page of the web service shares: settings, sources, counters, pages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from stddaq_common.runtime.stats import Stats
from stddaq_web import __version__
from stddaq_web.health import HealthPoller
from stddaq_web.image_feed import ImageFeed, LatestImage


@dataclass
class WebSettings:
    """What the application needs to know."""

    detector: str
    driver_url: str
    stream: str | None
    token: str | None = None
    fps: float = 5.0
    notes: list[str] = field(default_factory=list)


class WebCounters:
    """The web service's own counters."""

    def __init__(self, stats: Stats) -> None:
        self.pages = stats.gauge("pages", "pages connected now", initial=0)
        self.frames_sent = stats.counter("frames_sent", "8-bit frames sent to pages")
        self.frame_bytes = stats.counter("frame_bytes", "bytes of frames sent to pages")
        self.render_us = stats.gauge("last_render_us", "time to prepare the last frame", initial=0)
        self.bad_messages = stats.counter("bad_messages", "page messages that were not understood")
        self.starts = stats.counter("starts_forwarded", "start requests forwarded to the driver")
        self.stops = stats.counter("stops_forwarded", "stop requests forwarded to the driver")


class WebContext:
    """The settings, the live image feed, the health poller, the counters and the pages
    connected now; the status message a page gets once a second."""

    def __init__(
        self, settings: WebSettings, feed: ImageFeed | None, health: HealthPoller, stats: Stats
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.health = health
        self.counters = WebCounters(stats)
        self.pages: set[int] = set()

    @property
    def latest(self) -> LatestImage | None:
        """The newest live image, None before the first (or without a live stream)."""
        return self.feed.latest if self.feed is not None else None

    def page_opened(self, key: int) -> None:
        """A page connected."""
        self.pages.add(key)
        self.counters.pages.set(len(self.pages))

    def page_closed(self, key: int) -> None:
        """A page went away."""
        self.pages.discard(key)
        self.counters.pages.set(len(self.pages))

    def image_info(self) -> dict[str, Any]:
        """The live image's stream, counts, last error, and id/shape/dtype/age of the newest."""
        feed, latest = self.feed, self.latest
        info: dict[str, Any] = {
            "stream": self.settings.stream,
            "received": feed.received if feed is not None else 0,
            "last_error": feed.last_error if feed is not None else None,
        }
        if latest is not None:
            rows, columns = latest.pixels.shape
            info.update(
                image_id=latest.image_id,
                shape=[rows, columns],
                dtype=str(latest.pixels.dtype),
                age_s=round(time.time() - latest.received_at, 3),
            )
        return info

    def state(self) -> dict[str, Any]:
        """The status message: health, acquisition, live image, pages, notes."""
        return {
            "type": "status",
            "detector": self.settings.detector,
            "version": __version__,
            "health": self.health.snapshot(),
            "image": self.image_info(),
            "pages": len(self.pages),
            "token_required": self.settings.token is not None,
            "notes": self.settings.notes,
        }
