"""The web service's command line and the choices it makes from it and the config."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from stddaq_common.config.model import DaqConfig
from stddaq_common.runtime.arg_types import int_in_range, positive_float
from stddaq_common.runtime.runner import StartupError

DEFAULT_PORT = 8090
ENV_TOKEN_FILE = "STDDAQ_DRIVER_TOKEN_FILE"


@dataclass(frozen=True)
class WebOptions:
    """Everything the web service takes from its command line."""

    bind_addr: str
    port: int
    driver_url: str
    stream: str | None
    metrics: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    fps: float = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The web service's own options (after CONFIG and the common ones)."""
    parser.add_argument(
        "--bind-addr", default="127.0.0.1", metavar="ADDR", help="address of the page (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int_in_range(0, 65535),
        default=DEFAULT_PORT,
        metavar="PORT",
        help=f"port of the page (default {DEFAULT_PORT}; 0: any free port)",
    )
    parser.add_argument(
        "--driver-url",
        default="http://127.0.0.1:5000",
        metavar="URL",
        help="the driver's REST API (default http://127.0.0.1:5000)",
    )
    parser.add_argument(
        "--stream",
        default=None,
        metavar="ADDR",
        help="the live stream to show (a key of live_stream_configs; default: the first periodic one)",
    )
    parser.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a service's Prometheus endpoint, e.g. receiver=http://127.0.0.1:9101/metrics "
        "(repeatable; names: receiver, writer-K, live-K, ...)",
    )
    parser.add_argument(
        "--token-file",
        default=os.environ.get(ENV_TOKEN_FILE),
        metavar="FILE",
        help="the stack's driver token: the page then tells users with the right token "
        "from read-only ones (the driver checks it on every start and stop)",
    )
    parser.add_argument(
        "--fps",
        type=positive_float,
        default=5.0,
        metavar="N",
        help="frames per second at most to each page (default 5)",
    )


def parse_metrics_option(items: list[str]) -> dict[str, str]:
    """NAME=URL items as a dict; StartupError naming a bad one."""
    endpoints: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise StartupError(f"--metrics {item!r}: expected NAME=http://host:port/metrics")
        endpoints[name] = url
    return endpoints


def read_token(path: str | None) -> str | None:
    """The token in `path` (None: no file given); StartupError if unreadable or empty."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except OSError as error:
        raise StartupError(f"cannot read the token file {path}: {error.strerror}") from None
    if not token:
        raise StartupError(f"the token file {path} is empty")
    return token


def choose_stream(config: DaqConfig, wanted: str | None) -> str | None:
    """The live stream to subscribe to: `wanted` (must be configured), else the first
    periodic entry of live_stream_configs, else None (the page then says why)."""
    streams = config.live_stream_configs
    if wanted is not None:
        if wanted not in streams:
            configured = ", ".join(sorted(streams)) or "none"
            raise StartupError(f"--stream {wanted} is not in live_stream_configs (configured: {configured})")
        return wanted
    periodic = [address for address, entry in sorted(streams.items()) if entry.type == "periodic"]
    return periodic[0] if periodic else None


def options_from(args: argparse.Namespace) -> WebOptions:
    """WebOptions from parsed arguments (StartupError for a bad one)."""
    return WebOptions(
        bind_addr=args.bind_addr,
        port=args.port,
        driver_url=args.driver_url,
        stream=args.stream,
        metrics=parse_metrics_option(args.metrics),
        token=read_token(args.token_file),
        fps=args.fps,
    )
