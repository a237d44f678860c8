"""Every service accepts the flags of its std_daq counterpart, with std_daq's meaning:
std_det_writer `CONFIG WRITER_ID [-s SUFFIX]`, std_det_driver `[-s SUFFIX] [-n N] [-p PORT]`,
std_array10_recv `ADDRESS [-n/--number_of_connections N] [-t pull|sub]` (the live stream's
are in tests/live_stream/test_std_daq_flags.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from stddaq_common.runtime.runner import build_parser, instance_tags
from stddaq_driver.service import add_arguments as driver_arguments
from stddaq_receiver.service import add_arguments as receiver_arguments
from stddaq_writer.__main__ import add_arguments as writer_arguments
from tests.common.configs import write_pco_config
from tests.driver.harness import DEADLINE_S, DriverProcess, write_config


def test_writer_takes_std_daqs_positional_writer_id_and_source_suffix() -> None:
    parser = build_parser("writer", writer_arguments)
    args = parser.parse_args(["daq.json", "3", "-s", "h5bitshuffle-lz4"])
    assert (args.writer_id, args.ring_suffix) == (3, "h5bitshuffle-lz4")
    assert instance_tags(args) == {"index": "3"}
    args = parser.parse_args(["daq.json", "--index", "2", "--source_suffix", "image"])
    assert (args.writer_id, args.index, args.ring_suffix) == (None, 2, "image")
    assert instance_tags(args) == {"index": "2"}


def test_driver_takes_std_daqs_port_writer_count_and_suffix() -> None:
    parser = build_parser("driver", driver_arguments)
    args = parser.parse_args(["daq.json", "-p", "8123", "-n", "4", "-s", "image"])
    assert (args.ws_port, args.number_of_writers, args.source_suffix) == (8123, 4, "image")
    args = parser.parse_args(["daq.json", "--port", "8124", "--number_of_writers", "2"])
    assert (args.ws_port, args.number_of_writers) == (8124, 2)


def test_receiver_takes_std_daqs_number_of_connections_and_type() -> None:
    parser = build_parser("receiver", receiver_arguments)
    args = parser.parse_args(
        ["daq.json", "tcp://cam:9999", "--number_of_connections", "3", "-t", "sub"]
    )
    assert (args.stream_address, args.connections, args.socket_type) == ("tcp://cam:9999", 3, "sub")
    assert instance_tags(args) == {"stream": "tcp://cam:9999"}


def test_a_writer_started_as_std_daq_starts_it_is_that_writer(tmp_path: Path) -> None:
    detector = f"flags{uuid.uuid4().hex[:8]}"
    (tmp_path / "ipc").mkdir()
    config = write_pco_config(
        tmp_path / "daq.json", detector, 32, 48, number_of_writers=2, ipc_dir=str(tmp_path / "ipc"),
        stats_collection_period=0.2,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "stddaq_writer", str(config), "1", "-s", "image"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith(f"READY writer detector={detector}"), ready
    finally:
        os.kill(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 0, err
    assert re.search(rf"writer,detector={detector},index=1 ", err), err[-2000:]


def test_the_driver_runs_with_std_daqs_flags_and_refuses_a_wrong_writer_count(
    tmp_path: Path,
) -> None:
    detector = f"flags{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path, detector, number_of_writers=2)
    root = tmp_path / "data"
    root.mkdir()
    driver = DriverProcess(config, root, extra_args=["-n", "2", "-s", "image"])
    try:
        assert driver.ready_line.startswith("READY driver")
    finally:
        assert driver.stop() == 0, driver.log()
    refused = subprocess.run(
        [sys.executable, "-m", "stddaq_driver", str(config), "--allowed-root", str(root),
         "-n", "3", "-p", "0", "--rest-port", "0"],
        capture_output=True, text=True, timeout=DEADLINE_S, check=False,
    )
    assert refused.returncode == 1
    assert "-n/--number_of_writers 3 differs from the config's number_of_writers" in refused.stderr


@pytest.mark.parametrize("suffix", ["h5bitshuffle-lz4"])
def test_the_driver_refuses_a_suffix_it_cannot_deal(tmp_path: Path, suffix: str) -> None:
    config = write_config(tmp_path, f"flags{uuid.uuid4().hex[:8]}")
    refused = subprocess.run(
        [sys.executable, "-m", "stddaq_driver", str(config), "--allowed-root", str(tmp_path),
         "-s", suffix, "-p", "0", "--rest-port", "0"],
        capture_output=True, text=True, timeout=DEADLINE_S, check=False,
    )
    assert refused.returncode == 1
    assert f"-s/--source_suffix '{suffix}'" in refused.stderr
