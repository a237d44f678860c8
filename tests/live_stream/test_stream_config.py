"""Command line and the live_stream_configs lookup (no processes)."""

from __future__ import annotations

import argparse

import pytest

from stddaq_common.config.model import DaqConfig, parse_config
from stddaq_common.runtime.runner import StartupError, build_parser
from stddaq_live_stream.cli import add_arguments, options_from
from stddaq_live_stream.service import STD_DAQ_SEND_HWM, default_send_buffers
from stddaq_live_stream.stream_config import UnknownStreamAddress, stream_config_for
from tests.common.configs import pco_config


def _config(streams: dict[str, object]) -> DaqConfig:
    return parse_config(pco_config("ls-unit", 4, 4, live_stream_configs=streams))


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser("live_stream", add_arguments).parse_args(["cfg.json", *argv])


def test_finds_the_entry_of_the_exact_address() -> None:
    config = _config({"tcp://127.0.0.1:20000": {"type": "batch", "config": [1, 10]}})
    entry = stream_config_for(config, "tcp://127.0.0.1:20000")
    assert (entry.type, entry.config) == ("batch", [1, 10])


def test_missing_address_lists_the_configured_ones() -> None:
    config = _config(
        {
            "tcp://127.0.0.1:20000": {"type": "forward"},
            "tcp://0.0.0.0:20001": {"type": "periodic", "config": [1, 5]},
        }
    )
    with pytest.raises(UnknownStreamAddress) as caught:
        stream_config_for(config, "tcp://127.0.0.1:20002", "cfg.json")
    message = str(caught.value)
    assert "tcp://127.0.0.1:20002 is not in live_stream_configs of cfg.json" in message
    assert "configured addresses: tcp://0.0.0.0:20001, tcp://127.0.0.1:20000" in message
    assert "\n" not in message


def test_same_port_other_host_hints_at_the_exact_match() -> None:
    config = _config({"tcp://0.0.0.0:20000": {"type": "forward"}})
    with pytest.raises(UnknownStreamAddress, match=r"did you mean tcp://0\.0\.0\.0:20000\?"):
        stream_config_for(config, "tcp://127.0.0.1:20000")


def test_no_streams_configured_says_how_to_add_one() -> None:
    with pytest.raises(UnknownStreamAddress, match="no live stream is configured"):
        stream_config_for(_config({}), "tcp://127.0.0.1:20000")


def test_malformed_address_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match="tcp://host:port"):
        stream_config_for(_config({}), "ipc:///tmp/x")


def test_command_line_defaults_follow_std_daq() -> None:
    options = options_from(_parse("tcp://127.0.0.1:20000"))
    assert options.stream_address == "tcp://127.0.0.1:20000"
    assert (options.metadata_suffix, options.image_suffix) == ("image", "image")
    assert options.output_type == "array-1.0"
    assert options.send_hwm is None


def test_command_line_suffixes_and_type() -> None:
    options = options_from(
        _parse("tcp://127.0.0.1:20000", "-s", "h5bitshuffle-lz4", "-t", "bsread", "--image_suffix", "raw")
    )
    assert (options.metadata_suffix, options.image_suffix) == ("h5bitshuffle-lz4", "raw")
    assert options.output_type == "bsread"


@pytest.mark.parametrize(
    "argv", [["tcp://x:1", "-t", "json"], ["tcp://x:1", "-s", "a/b"], ["tcp://x:1", "--send-hwm", "0"]]
)
def test_command_line_rejects_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(*argv)
    assert "error:" in capsys.readouterr().err


def test_default_send_hwm_is_std_daqs_and_copies_stay_near_64_mib() -> None:
    # std_daq's 100 for any image size: a burst is absorbed (images sent from their slot
    # cost no memory); the buffers of copied images are what bounds memory.
    assert STD_DAQ_SEND_HWM == 100
    assert default_send_buffers(100, 64 * 64 * 2) == 104
    assert default_send_buffers(100, 2 * 1024 * 1024) == 32
    assert default_send_buffers(100, 2016 * 2016 * 2) == 8
    assert default_send_buffers(100, 512 * 1024 * 1024) == 6
