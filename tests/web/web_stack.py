"""A real stack under `stddaq up --fake-camera` with its web page, and headless Chromium.

Every name is unique (detector, ipc directory, ports); every process started here is
stopped by its PID. Waits poll for a condition with a generous deadline: nothing here is
an assertion about speed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from tests.common.configs import pco_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DEADLINE_S = 120.0
STDDAQ = [sys.executable, "-m", "stddaq_common.cli"]


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the kernel just said is free."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_metrics_base() -> int:
    """A port base for `stddaq up --metrics-port-base` whose ports (receiver +0, driver +1,
    live stream +10, writers +100, +101) are free now, below the ephemeral range."""
    rng = random.Random()
    while True:
        base = rng.randrange(20000, 30000)
        ports = [base + offset for offset in (0, 1, 10, 100, 101)]
        try:
            probes = [socket.create_server(("127.0.0.1", port)) for port in ports]
        except OSError:
            continue
        for probe in probes:
            probe.close()
        return base


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = DEADLINE_S, every: float = 0.2) -> Any:
    """Poll `predicate` until it returns something true; AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # a page in the middle of redrawing, a service restarting
            last_error = error
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what} (last error: {last_error!r})")
        time.sleep(every)


class WebStack:
    """`stddaq up CONFIG --fake-camera --token-file F` with the web page on a port of its own."""

    def __init__(self, base: Path, height: int, width: int, rate_hz: float) -> None:
        self.detector = f"web-{uuid.uuid4().hex[:10]}"
        self.height, self.width = height, width
        self.ipc_dir = Path(tempfile.mkdtemp(prefix="webt", dir="/tmp"))
        self.data = base / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.rest_port, self.ws_port, self.camera_port, self.web_port = (free_port() for _ in range(4))
        self.live_address = f"tcp://127.0.0.1:{free_port()}"
        self.metrics_base = free_metrics_base()
        document = pco_config(
            self.detector,
            height,
            width,
            number_of_writers=2,
            ipc_dir=str(self.ipc_dir),
            stats_collection_period=1,
            live_stream_configs={self.live_address: {"type": "periodic", "config": [1, 5]}},
        )
        self.config_path = base / "daq.json"
        self.config_path.write_text(json.dumps(document))
        self.token = uuid.uuid4().hex
        self.token_path = base / "token"
        self.token_path.write_text(self.token + "\n")
        self.rate_hz = rate_hz
        self.lines: list[str] = []
        self.log_path = base / "stack.log"
        self.process: subprocess.Popen[str] | None = None
        self.rest = httpx.Client(
            base_url=f"http://127.0.0.1:{self.rest_port}/api/v1",
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        self.url = f"http://127.0.0.1:{self.web_port}/"

    def up(self) -> None:
        """Start the stack; wait until every service is ready and the page answers."""
        self.process = subprocess.Popen(
            [
                *STDDAQ,
                "up",
                str(self.config_path),
                "--fake-camera",
                "--camera-rate",
                str(self.rate_hz),
                "--camera-port",
                str(self.camera_port),
                "--rest-port",
                str(self.rest_port),
                "--ws-port",
                str(self.ws_port),
                "--web-port",
                str(self.web_port),
                "--allowed-root",
                str(self.data),
                "--token-file",
                str(self.token_path),
                "--metrics-port-base",
                str(self.metrics_base),
                "--status-every",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_line(r"\[stack\] stack of .* is up")

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
                log.write(line)

    def wait_line(self, pattern: str, start: int = 0) -> re.Match[str]:
        """The first output line from index `start` on that matches `pattern`."""
        regex = re.compile(pattern)

        def find() -> re.Match[str] | None:
            for line in self.lines[start:]:
                match = regex.search(line)
                if match:
                    return match
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError("stddaq up exited:\n" + "\n".join(self.lines[-40:]))
            return None

        found: re.Match[str] = wait_for(f"a line matching {pattern!r}", find)
        return found

    def pid_of(self, service: str) -> int:
        """PID of the service's current process (from the supervisor's lines)."""
        found = re.findall(
            rf"\[stack\] {re.escape(service)} (?:ready|restarted) \(pid (\d+)", "\n".join(self.lines)
        )
        assert found, f"no pid of {service}"
        return int(found[-1])

    def kill(self, service: str) -> None:
        """SIGKILL a service; the supervisor restarts it."""
        os.kill(self.pid_of(service), signal.SIGKILL)

    def status(self) -> dict[str, Any]:
        """The driver's GET /status."""
        answer = self.rest.get("/status")
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def down(self) -> None:
        """SIGINT `stddaq up` (Ctrl-C) and wait; remove what is left of the detector."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self.rest.close()
        for name in os.listdir("/dev/shm"):
            if name.startswith(self.detector):
                with contextlib.suppress(OSError):
                    os.unlink(f"/dev/shm/{name}")
        shutil.rmtree(self.ipc_dir, ignore_errors=True)


def start_browser(width: int = 1440, height: int = 1250) -> Any:
    """Headless Debian Chromium through Debian's chromedriver (selenium-manager never runs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


_READ_CANVAS = """
const canvas = document.getElementById('image');
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let red = '';
for (let i = 0; i < data.length; i += 4) red += String.fromCharCode(data[i]);
const channels = [0, 1, 2].map((c) => data[c] === data[0]);
return {dataset: {...canvas.dataset}, width: canvas.width, height: canvas.height,
        red: btoa(red), grey: data.length > 0 && data[0] === data[1] && data[1] === data[2]};
"""


def read_canvas(browser: Any) -> tuple[dict[str, str], npt.NDArray[np.uint8]]:
    """The canvas's data attributes and its red channel (rows x columns), read at one moment."""
    result = browser.execute_script(_READ_CANVAS)
    pixels = np.frombuffer(base64.b64decode(result["red"]), np.uint8).reshape(
        result["height"], result["width"]
    )
    return result["dataset"], pixels


def documented_mapping(frame: npt.NDArray[Any], dataset: dict[str, str]) -> npt.NDArray[np.uint8]:
    """docs/web.md: the region sampled every `step` pixels, then (clip(v, lo, hi) - lo) * 255 // (hi - lo)."""
    x0, y0, w, h, step = (int(dataset[key]) for key in ("x0", "y0", "w", "h", "step"))
    lo, hi = int(float(dataset["lo"])), int(float(dataset["hi"]))
    shown = frame[y0 : y0 + h : step, x0 : x0 + w : step].astype(np.int64)
    return ((np.clip(shown, lo, hi) - lo) * 255 // (hi - lo)).astype(np.uint8)
