"""Which processes make up one detector's stack, in start order, from its config file."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from stddaq_common.config.model import DaqConfig
from stddaq_stack.child import ProcessSpec


@dataclass(frozen=True)
class CameraOptions:
    """The fake PCO camera of a demo stack (None in StackOptions: a real camera streams)."""

    port: int = 9990
    rate_hz: float = 100.0
    frames: int = 0
    compression: str = "none"


DEFAULT_METRICS_PORT_BASE = 9710
"""First Prometheus port of a stack (`stddaq up --metrics-port-base`)."""

RECEIVER_METRICS_OFFSET = 0
DRIVER_METRICS_OFFSET = 1
LIVE_STREAM_METRICS_OFFSET = 10
"""Live stream i (in sorted address order) serves base + 10 + i (at most 90 streams)."""
WRITER_METRICS_OFFSET = 100
"""Writer k serves base + 100 + k."""


def metrics_port(base: int, offset: int) -> int:
    """The metrics port of the service at `offset` (base 0: every service picks a free port)."""
    if base == 0:
        return 0
    port = base + offset
    if port > 65535:
        raise ValueError(f"metrics port base {base} + {offset} is beyond 65535")
    return port


@dataclass(frozen=True)
class StackOptions:
    """Choices `stddaq up` adds to the config file."""

    camera_address: str = "tcp://127.0.0.1:9990"
    connections: int = 4
    input_format: str = "bsread"
    input_reader: str | None = None
    """The receiver's --input-reader (None: its default)."""
    rest_port: int = 5000
    ws_port: int = 8080
    bind_addr: str = "127.0.0.1"
    allowed_roots: list[str] = field(default_factory=list)
    fake_camera: CameraOptions | None = None
    python: str = sys.executable
    metrics_port_base: int | None = None
    """None: no metrics endpoints; 0: each service on a free port (its READY line says);
    `stddaq up` and `make demo` use DEFAULT_METRICS_PORT_BASE."""
    metrics_addr: str = "127.0.0.1"
    token_file: str | None = None
    """The driver's bearer-token file (the web page gets it too); None: no token."""
    web_port: int | None = None
    """Port of the web page (services/web); None: no web service."""


def loopback(bind_addr: str) -> str:
    """The address to reach a service bound at `bind_addr` from this machine."""
    return "127.0.0.1" if bind_addr in ("0.0.0.0", "*", "") else bind_addr


def web_metrics(config: DaqConfig, options: StackOptions) -> dict[str, str]:
    """Service name -> its metrics URL, for the web page (none without a fixed port base)."""
    base = options.metrics_port_base
    if not base:
        return {}
    host = loopback(options.metrics_addr)
    offsets = {"receiver": RECEIVER_METRICS_OFFSET}
    offsets.update({f"writer-{k}": WRITER_METRICS_OFFSET + k for k in range(config.writers)})
    offsets.update(
        {f"live-{i}": LIVE_STREAM_METRICS_OFFSET + i for i in range(len(config.live_stream_configs))}
    )
    return {name: f"http://{host}:{metrics_port(base, offset)}/metrics" for name, offset in offsets.items()}


def web_argv(config_path: str, config: DaqConfig, options: StackOptions) -> list[str]:
    """The web page's command line: the driver's REST URL, the services' metrics, the token."""
    argv = [
        options.python,
        "-m",
        "stddaq_web",
        config_path,
        "--bind-addr",
        options.bind_addr,
        "--port",
        str(options.web_port),
        "--driver-url",
        f"http://{loopback(options.bind_addr)}:{options.rest_port}",
    ]
    for name, url in sorted(web_metrics(config, options).items()):
        argv += ["--metrics", f"{name}={url}"]
    if options.token_file is not None:
        argv += ["--token-file", options.token_file]
    return argv


def _metrics_args(options: StackOptions, offset: int) -> list[str]:
    base = options.metrics_port_base
    if base is None:
        return []
    port = metrics_port(base, offset)
    return ["--metrics-port", str(port), "--metrics-addr", options.metrics_addr]


def stack_specs(config_path: str, config: DaqConfig, options: StackOptions) -> list[ProcessSpec]:
    """The services of the stack in start order: receiver (owns the ring), writers,
    driver (REST + WebSocket), one live stream per `live_stream_configs` address, the web
    page (if `web_port`), and the fake camera last (it binds; the receiver's sockets
    connect whenever it comes).
    Each service runner serves Prometheus metrics on base + its offset (see the constants)."""
    py = options.python
    live_addresses = sorted(config.live_stream_configs)
    if len(live_addresses) > WRITER_METRICS_OFFSET - LIVE_STREAM_METRICS_OFFSET:
        raise ValueError(f"{len(live_addresses)} live streams: at most 90 get a metrics port")
    specs = [
        ProcessSpec(
            "receiver",
            [
                py,
                "-m",
                "stddaq_receiver",
                config_path,
                options.camera_address,
                "-n",
                str(options.connections),
                "-t",
                "pull",
                "-f",
                options.input_format,
                *_metrics_args(options, RECEIVER_METRICS_OFFSET),
                *(("--input-reader", options.input_reader) if options.input_reader else ()),
            ],
        )
    ]
    specs += [
        ProcessSpec(
            f"writer-{k}",
            [
                py, "-m", "stddaq_writer", config_path, "--index", str(k),
                *_metrics_args(options, WRITER_METRICS_OFFSET + k),
            ],
        )
        for k in range(config.writers)
    ]
    driver = [
        py,
        "-m",
        "stddaq_driver",
        config_path,
        "--bind-addr",
        options.bind_addr,
        "--rest-port",
        str(options.rest_port),
        "--ws-port",
        str(options.ws_port),
        *_metrics_args(options, DRIVER_METRICS_OFFSET),
    ]
    for root in options.allowed_roots:
        driver += ["--allowed-root", root]
    if options.token_file is not None:
        driver += ["--token-file", options.token_file]
    specs.append(ProcessSpec("driver", driver))
    specs += [
        ProcessSpec(
            f"live-{i}",
            [
                py, "-m", "stddaq_live_stream", config_path, address,
                *_metrics_args(options, LIVE_STREAM_METRICS_OFFSET + i),
            ],
        )
        for i, address in enumerate(live_addresses)
    ]
    if options.web_port is not None:
        specs.append(ProcessSpec("web", web_argv(config_path, config, options)))
    camera = options.fake_camera
    if camera is not None:
        specs.append(
            ProcessSpec(
                "camera",
                [
                    py,
                    "-m",
                    "stddaq_fake_camera",
                    "--address",
                    f"tcp://127.0.0.1:{camera.port}",
                    "--shape",
                    str(config.image_pixel_height),
                    str(config.image_pixel_width),
                    "--dtype",
                    f"uint{config.bit_depth}",
                    "--rate",
                    str(camera.rate_hz),
                    "--frames",
                    str(camera.frames),
                    "--compression",
                    camera.compression,
                ],
            )
        )
    return specs
