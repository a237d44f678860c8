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


@dataclass(frozen=True)
class StackOptions:
    """Choices `stddaq up` adds to the config file."""

    camera_address: str = "tcp://127.0.0.1:9990"
    connections: int = 4
    input_format: str = "bsread"
    rest_port: int = 5000
    ws_port: int = 8080
    bind_addr: str = "127.0.0.1"
    allowed_roots: list[str] = field(default_factory=list)
    fake_camera: CameraOptions | None = None
    python: str = sys.executable


def stack_specs(config_path: str, config: DaqConfig, options: StackOptions) -> list[ProcessSpec]:
    """The services of the stack in start order: receiver (owns the ring), writers,
    driver (REST + WebSocket), one live stream per `live_stream_configs` address, and the
    fake camera last (it binds; the receiver's sockets connect whenever it comes)."""
    py = options.python
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
            ],
        )
    ]
    specs += [
        ProcessSpec(f"writer-{k}", [py, "-m", "stddaq_writer", config_path, "--index", str(k)])
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
    ]
    for root in options.allowed_roots:
        driver += ["--allowed-root", root]
    specs.append(ProcessSpec("driver", driver))
    specs += [
        ProcessSpec(f"live-{i}", [py, "-m", "stddaq_live_stream", config_path, address])
        for i, address in enumerate(sorted(config.live_stream_configs))
    ]
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
