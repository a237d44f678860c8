"""The service runner, driven through real subprocesses of tests/common/example_service.py."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stddaq_common.testing.processes import wait_until as shared_wait_until
from tests.common.configs import pco_config

EXAMPLE = Path(__file__).with_name("example_service.py")
DEADLINE_S = 60.0

GOOD_CONFIG: dict[str, Any] = pco_config("runner-test")


def write_config(directory: Path, **changes: Any) -> Path:
    config = {**GOOD_CONFIG, **changes}
    for key in [key for key, value in changes.items() if value is None]:
        del config[key]
    path = directory / "daq.json"
    path.write_text(json.dumps(config))
    return path


def wait_until(condition: Any, what: str) -> None:
    shared_wait_until(what, condition, DEADLINE_S, every=0.02)


class Running:
    """One example-service subprocess: stdout read without blocking, stderr in a file."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.markers = tmp / "markers"
        self.markers.mkdir(exist_ok=True)
        self.stderr_path = tmp / "stderr.txt"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(EXAMPLE), *args, "--marker-dir", str(self.markers)],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self.stdout = b""

    def _read_stdout(self, deadline: float) -> bool:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return True
        chunk = os.read(fd, 4096)
        self.stdout += chunk
        return bool(chunk)

    def ready_line(self) -> str:
        deadline = time.monotonic() + DEADLINE_S
        while b"\n" not in self.stdout and time.monotonic() < deadline:
            if not self._read_stdout(deadline):
                break
        if b"\n" not in self.stdout:
            pytest.fail(f"no readiness line; stderr:\n{self.stderr()}")
        return self.stdout.decode().splitlines()[0]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def finish(self) -> int:
        """Wait for the exit status, reading the rest of stdout."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and self._read_stdout(deadline):
            pass
        return self.process.wait(max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    started: list[Running] = []

    def start_service(*args: str) -> Running:
        running = Running(tmp_path, *args)
        started.append(running)
        return running

    yield start_service
    for running in started:
        running.stop()


@dataclass
class Finished:
    """A run that ended by itself: its paths, exit status and output."""

    config: Path
    markers: Path
    returncode: int
    stdout: str
    stderr: str


def _failing_case(directory: Path, case: str, taken_port: int) -> tuple[Path, list[str]]:
    """The config file and extra arguments of one run that must end by itself."""
    if case == "metrics_port_taken":
        return write_config(directory), ["--metrics-port", str(taken_port)]
    if case == "missing":
        return directory / "nowhere.json", []
    if case == "bad_config":
        return write_config(directory, bit_depth=12, image_pixel_height=None), []
    if case == "bad_influx":
        return write_config(directory, influxdb_url="http://influx:8086/"), []
    if case == "bad_option":
        return write_config(directory), ["--metrics-port", "http"]
    if case == "run_error":
        return write_config(directory), ["--fail-run"]
    assert case == "startup_error"
    return write_config(directory), ["--fail-startup"]


FAILING_CASES = (
    "missing", "bad_config", "bad_influx", "bad_option", "startup_error", "run_error",
    "metrics_port_taken",
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Finished]:
    """Every run that must fail, started together (interpreter start-up dominates)."""
    started = {}
    holder = socket.socket()  # keeps a port busy for "metrics_port_taken"
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    for case in FAILING_CASES:
        directory = tmp_path_factory.mktemp(case)
        config, extra = _failing_case(directory, case, holder.getsockname()[1])
        markers = directory / "markers"
        markers.mkdir()
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE), str(config), *extra, "--marker-dir", str(markers)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[case] = (config, markers, process)
    results = {}
    try:
        for case, (config, markers, process) in started.items():
            stdout, stderr = process.communicate(timeout=DEADLINE_S)
            results[case] = Finished(config, markers, process.returncode, stdout, stderr)
    finally:
        holder.close()
        for _config, _markers, process in started.values():
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=30)
    return results


@pytest.mark.parametrize(("stop_signal", "log_format"), [(signal.SIGTERM, "text"), (signal.SIGINT, "json")])
def test_signal_stops_the_service_and_closes_it(
    tmp_path: Path, start: Any, stop_signal: signal.Signals, log_format: str
) -> None:
    config = write_config(tmp_path, stats_collection_period=0.05)
    service = start(str(config), "--log-format", log_format)
    line = service.ready_line()
    assert line == f"READY example detector=runner-test pid={service.process.pid}"
    wait_until(lambda: (service.markers / "running").exists(), "run() to start")
    service.process.send_signal(stop_signal)
    assert service.finish() == 0, service.stderr()
    assert (service.markers / "closed").exists()
    assert service.stdout.decode().splitlines() == [line]  # exactly one line on stdout
    stderr = service.stderr()
    assert "Traceback" not in stderr
    assert f"{stop_signal.name} received: stopping" in stderr
    assert re.search(r"example,detector=runner-test turns=\d+i,turns_rate=[0-9.e+-]+ \d{19}", stderr)
    if log_format == "json":
        entries = [json.loads(text) for text in stderr.splitlines()]
        assert {entry["service"] for entry in entries} == {"example"}
        assert {entry["detector"] for entry in entries} == {"runner-test"}


def test_a_second_signal_while_closing_is_only_logged(tmp_path: Path, start: Any) -> None:
    service = start(str(write_config(tmp_path)), "--hold-close")
    service.ready_line()
    service.process.send_signal(signal.SIGTERM)
    wait_until(lambda: (service.markers / "closing").exists(), "close() to begin")
    service.process.send_signal(signal.SIGINT)
    wait_until(
        lambda: "SIGINT received again while stopping" in service.stderr(), "the second signal to be logged"
    )
    (service.markers / "release").write_text("go")
    assert service.finish() == 0, service.stderr()
    assert (service.markers / "closed").exists()
    assert "Traceback" not in service.stderr()


def test_missing_config_file_exits_2_with_one_line(finished: dict[str, Finished]) -> None:
    result = finished["missing"]
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"example: {result.config}: cannot read the config file: No such file or directory"
    ]


def test_bad_config_exits_2_with_one_line_per_problem(finished: dict[str, Finished]) -> None:
    result = finished["bad_config"]
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert all(line.startswith(f"example: {result.config}: ") for line in lines)
    [bit_depth] = [line for line in lines if "bit_depth" in line]
    assert "(got 12)" in bit_depth
    [height] = [line for line in lines if "image_pixel_height" in line]
    assert "required" in height.lower() or "missing" in height.lower()


def test_bad_influxdb_url_exits_2_naming_the_field(finished: dict[str, Finished]) -> None:
    result = finished["bad_influx"]
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"example: {result.config}: influxdb_url ")
    assert "/write" in line


def test_bad_option_exits_2_with_usage(finished: dict[str, Finished]) -> None:
    result = finished["bad_option"]
    assert result.returncode == 2
    assert "usage: example" in result.stderr
    assert "--metrics-port: 'http' is not a port number" in result.stderr
    assert "Traceback" not in result.stderr


def test_startup_error_exits_1_with_one_line(finished: dict[str, Finished]) -> None:
    result = finished["startup_error"]
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "example: cannot start: camera runner-test is not reachable at tcp://nowhere:1"
    ]
    assert not (result.markers / "closed").exists()


def test_a_failing_run_still_closes_and_exits_1(finished: dict[str, Finished]) -> None:
    result = finished["run_error"]
    assert result.returncode == 1
    assert result.stdout.startswith("READY example ")
    assert (result.markers / "closed").exists()
    assert "example: run() failed unexpectedly" in result.stderr
    assert "RuntimeError: a bug in run()" in result.stderr  # a bug: its traceback is logged
    assert "example stopped (exit status 1)" in result.stderr


def test_a_busy_metrics_port_is_a_startup_error(finished: dict[str, Finished]) -> None:
    result = finished["metrics_port_taken"]
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert re.fullmatch(
        r"example: cannot start: metrics endpoint 127\.0\.0\.1:\d+: Address already in use", line
    )


def test_metrics_port_serves_the_service_counters(tmp_path: Path, start: Any) -> None:
    service = start(str(write_config(tmp_path)), "--metrics-port", "0")
    line = service.ready_line()
    match = re.fullmatch(r"READY example detector=runner-test pid=\d+ metrics_port=(\d+)", line)
    assert match, line
    wait_until(lambda: (service.markers / "running").exists(), "run() to start")
    response = httpx.get(f"http://127.0.0.1:{match[1]}/metrics", timeout=30)
    assert response.status_code == 200
    assert re.search(
        r'^stddaq_example_turns_total\{detector="runner-test"\} \d+', response.text, re.MULTILINE
    ), response.text
    service.process.send_signal(signal.SIGTERM)
    assert service.finish() == 0, service.stderr()
