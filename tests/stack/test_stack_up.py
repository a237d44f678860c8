"""`stddaq up`: the whole stack starts, records through `stddaq acquire`, restarts a crashed
service, and shuts down clean on Ctrl-C leaving no segment or socket file behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stddaq_fake_camera.frames import FramePattern
from tests.common.configs import pco_config
from tests.deploy.test_monitoring import dashboard_metric_names

HEIGHT, WIDTH = 48, 64
STDDAQ = [sys.executable, "-m", "stddaq_common.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Stack:
    """A `stddaq up` subprocess whose output is collected line by line."""

    def __init__(self, tmp_path: Path) -> None:
        self.detector = f"stk-{uuid.uuid4().hex[:8]}"
        self.ipc_dir = tmp_path / "ipc"
        self.ipc_dir.mkdir()
        self.data = tmp_path / "data"
        self.data.mkdir()
        self.rest_port, self.ws_port, self.camera_port, live_port = (free_port() for _ in range(4))
        self.live_address = f"tcp://127.0.0.1:{live_port}"
        config = pco_config(
            self.detector, HEIGHT, WIDTH,
            number_of_writers=2,
            ipc_dir=str(self.ipc_dir),
            live_stream_configs={self.live_address: {"type": "forward"}},
        )  # fmt: skip
        self.config_path = tmp_path / "daq.json"
        self.config_path.write_text(json.dumps(config))
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                *STDDAQ,
                "up",
                str(self.config_path),
                "--fake-camera",
                "--camera-rate",
                "200",
                "--camera-port",
                str(self.camera_port),
                "--rest-port",
                str(self.rest_port),
                "--ws-port",
                str(self.ws_port),
                "--allowed-root",
                str(self.data),
                "--status-every",
                "0",
                "--metrics-port-base",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 90.0, start: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                match = regex.search(line)
                if match:
                    return match
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        tail = "\n".join(self.lines[-40:])
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output:\n{tail}")

    def acquire(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*STDDAQ, "acquire", "--url", f"http://127.0.0.1:{self.rest_port}", *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def leftovers(self) -> list[str]:
        shm = [name for name in os.listdir("/dev/shm") if name.startswith(self.detector)]
        return shm + [p.name for p in self.ipc_dir.iterdir()]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        return self.process.returncode


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    try:
        yield running
    finally:
        running.stop()
        for name in os.listdir("/dev/shm"):
            if name.startswith(running.detector):
                os.unlink(f"/dev/shm/{name}")


def check_file(path: str, detector: str, n_images: int) -> None:
    pattern = FramePattern((HEIGHT, WIDTH), np.dtype("<u2"))
    with h5py.File(path, "r") as file:
        data = file[f"{detector}/data"]
        ids = file[f"{detector}/metadata"]["image_id"]
        assert data.shape == (n_images, HEIGHT, WIDTH)
        assert np.all(np.diff(ids.astype(np.int64)) == 1), "ids not consecutive in the master file"
        for index, image_id in enumerate(ids):
            np.testing.assert_array_equal(data[index], pattern.frame(int(image_id)))


def test_up_records_restarts_a_crashed_service_and_shuts_down_clean(stack: Stack) -> None:
    stack.wait_for(r"\[stack\] stack of .* is up")

    result = stack.acquire("--path", str(stack.data / "run1"), "--n-images", "40")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "file_saved: 40 images written, 0 missing" in result.stdout
    check_file(str(stack.data / "run1" / "file.h5"), stack.detector, 40)

    status = json.loads(stack.acquire("--status").stdout)
    assert status["state"] == "idle" and status["outcome"] == "file_saved"

    # A writer crashes: the supervisor restarts it and the next acquisition works.
    pid = int(stack.wait_for(r"\[stack\] writer-1 ready \(pid (\d+)\)").group(1))
    mark = len(stack.lines)
    os.kill(pid, signal.SIGKILL)
    stack.wait_for(r"\[stack\] writer-1 exited with -9; restarting", start=mark)
    stack.wait_for(r"\[stack\] writer-1 restarted \(pid \d+, restart 1\)", start=mark)
    deadline = time.monotonic() + 60
    while not all(w["alive"] for w in json.loads(stack.acquire("--status").stdout)["writers"]):
        assert time.monotonic() < deadline, "the restarted writer never reported to the driver"
        time.sleep(0.5)
    result = stack.acquire("--path", str(stack.data / "run2"), "--n-images", "25")
    assert result.returncode == 0, result.stdout + result.stderr
    check_file(str(stack.data / "run2" / "file.h5"), stack.detector, 25)

    assert stack.stop() == 0, "\n".join(stack.lines[-30:])
    assert any("[stack] stopped" in line for line in stack.lines)
    assert not any("left behind" in line for line in stack.lines), "a service left a file behind"
    assert stack.leftovers() == []


def metrics_ports(stack: Stack) -> dict[str, int]:
    """Service name -> the metrics port its READY line announced."""
    ports = {}
    for name in ("receiver", "writer-0", "writer-1", "driver", "live-0"):
        match = stack.wait_for(rf"^\[{name}\]\s+READY .* metrics_port=(\d+)")
        ports[name] = int(match.group(1))
    return ports


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text: str = response.read().decode()
    return text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) missing")
def test_up_serves_metrics_that_promtool_and_prometheus_client_accept(stack: Stack) -> None:
    stack.wait_for(r"\[stack\] stack of .* is up")
    ports = metrics_ports(stack)
    texts = {name: scrape(port) for name, port in ports.items()}
    texts["driver-rest"] = scrape(stack.rest_port)
    prefixes = {"receiver": "stddaq_receiver_", "writer-0": "stddaq_writer_",
                "writer-1": "stddaq_writer_", "driver": "stddaq_driver_",
                "driver-rest": "stddaq_driver_", "live-0": "stddaq_live_stream_"}
    for name, text in texts.items():
        check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                               capture_output=True, timeout=60, check=False)
        assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), (
            name, check.stdout, check.stderr)
        families = list(text_string_to_metric_families(text))
        assert families, name
        assert all(family.name.startswith(prefixes[name]) for family in families), name
        labels = {key for family in families for sample in family.samples for key in sample.labels}
        assert "detector" in labels
    # the receiver counts what the fake camera sends (scraped until it has)
    deadline = time.monotonic() + 60
    while True:
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(scrape(ports["receiver"]))
            for sample in family.samples
        }
        if samples.get("stddaq_receiver_frames_received_total", 0) > 0:
            break
        assert time.monotonic() < deadline, "the receiver's metrics never counted a frame"
        time.sleep(0.5)
    exposed = {sample.name for text in texts.values()
               for family in text_string_to_metric_families(text) for sample in family.samples}
    missing = dashboard_metric_names() - exposed
    assert not missing, f"the Grafana dashboard queries metrics no service exposes: {missing}"
    writer_indexes = set()
    for name in ("writer-0", "writer-1"):
        for family in text_string_to_metric_families(texts[name]):
            for sample in family.samples:
                writer_indexes.add(sample.labels.get("index"))
    assert writer_indexes == {"0", "1"}, "each writer's metrics carry its index"
    assert stack.stop() == 0
