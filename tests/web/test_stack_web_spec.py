"""`stddaq up` and `make demo` start the web page with the driver's URL, every service's
metrics endpoint (from the stack's metrics port base) and the token file, which the driver
gets too; without a web port there is no web service."""

from __future__ import annotations

from stddaq_common.config.model import DaqConfig
from stddaq_stack.stack_spec import StackOptions, stack_specs
from tests.common.configs import pco_config

CONFIG = DaqConfig.model_validate(
    pco_config(
        "webspec",
        number_of_writers=2,
        live_stream_configs={"tcp://127.0.0.1:20000": {"type": "periodic", "config": [1, 5]}},
    )
)


def _argv(options: StackOptions, name: str) -> list[str]:
    specs = {spec.name: spec for spec in stack_specs("/etc/daq.json", CONFIG, options)}
    return list(specs[name].argv)


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, item in enumerate(argv) if item == flag]


def test_the_web_page_gets_the_driver_the_metrics_and_the_token() -> None:
    options = StackOptions(rest_port=5123, bind_addr="0.0.0.0", metrics_port_base=9000,
                           web_port=8123, token_file="/run/token")
    argv = _argv(options, "web")
    assert argv[1:4] == ["-m", "stddaq_web", "/etc/daq.json"]
    assert _pairs(argv, "--port") == ["8123"]
    assert _pairs(argv, "--driver-url") == ["http://127.0.0.1:5123"]
    assert sorted(_pairs(argv, "--metrics")) == [
        "live-0=http://127.0.0.1:9010/metrics",
        "receiver=http://127.0.0.1:9000/metrics",
        "writer-0=http://127.0.0.1:9100/metrics",
        "writer-1=http://127.0.0.1:9101/metrics",
    ]
    assert _pairs(argv, "--token-file") == ["/run/token"]
    assert _pairs(_argv(options, "driver"), "--token-file") == ["/run/token"]


def test_free_metrics_ports_cannot_be_told_to_the_page() -> None:
    argv = _argv(StackOptions(metrics_port_base=0, web_port=8123), "web")
    assert "--metrics" not in argv and "--token-file" not in argv


def test_without_a_web_port_there_is_no_web_service() -> None:
    names = [spec.name for spec in stack_specs("/etc/daq.json", CONFIG, StackOptions())]
    assert "web" not in names
