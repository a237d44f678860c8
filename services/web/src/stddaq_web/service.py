"""Building the web service from the config and the command line, and its entry point."""

from __future__ import annotations

import argparse
import logging
import threading

from stddaq_common.config.model import DaqConfig
from stddaq_common.ring.geometry import ring_geometry
from stddaq_common.runtime.runner import StartupError
from stddaq_common.runtime.server_thread import bind_listener
from stddaq_common.runtime.stats import Stats
from stddaq_web.app import WebSettings, create_app
from stddaq_web.cli import add_arguments as add_arguments  # the runner's add_arguments
from stddaq_web.cli import choose_stream, options_from
from stddaq_web.health import HealthPoller, Sources
from stddaq_web.image_feed import ImageFeed
from stddaq_web.server import WebServer

SERVICE_NAME = "web"

log = logging.getLogger("stddaq.web")


class WebService:
    """The image feed, the health poller and the HTTP server of one page."""

    def __init__(self, server: WebServer, feed: ImageFeed | None, health: HealthPoller, stats: Stats) -> None:
        self.server = server
        self.feed = feed
        self.health = health
        self.stats = stats

    def run(self, stop: threading.Event) -> None:
        """Start the threads and watch them until `stop` is set."""
        if self.feed is not None:
            self.feed.start()
        self.health.start()
        self.server.start()
        while not stop.wait(0.5):
            self.stats.maybe_emit()
            if not self.server.is_alive():
                raise StartupError(f"the web server stopped: {self.server.failure!r}")

    def close(self) -> None:
        """Stop serving, polling and receiving."""
        self.server.stop()
        self.health.close()
        if self.feed is not None:
            self.feed.close()


def build(config: DaqConfig, args: argparse.Namespace, stats: Stats) -> WebService:
    """The web service of this config (StartupError for a bad option or a port in use)."""
    options = options_from(args)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    stream = choose_stream(config, options.stream)
    notes = []
    if stream is None:
        notes.append(
            "no live image: live_stream_configs has no periodic stream (add e.g. "
            '"tcp://127.0.0.1:20000": {"type": "periodic", "config": [1, 5]})'
        )
    listener = bind_listener(options.bind_addr, options.port, "web page")
    feed = ImageFeed(stream, stats) if stream is not None else None
    health = HealthPoller(Sources(options.driver_url, options.metrics, ring_geometry(config).n_slots))
    settings = WebSettings(
        detector=config.detector_name,
        driver_url=options.driver_url,
        stream=stream,
        token=options.token,
        fps=options.fps,
        notes=notes,
    )
    server = WebServer(create_app(settings, feed, health, stats), listener)
    host = "127.0.0.1" if options.bind_addr in ("0.0.0.0", "", "*") else options.bind_addr
    log.info(
        "web page at http://%s:%d/ (live stream %s, driver %s)",
        host,
        server.port,
        stream or "none",
        options.driver_url,
    )
    return WebService(server, feed, health, stats)
