"""Running the driver as a real process for tests, and waiting for things without timing."""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from stddaq_common.bus.metadata import Dtype, ImageMeta
from stddaq_common.bus.metadata_stream import MetadataPublisher

DEADLINE_S = 30.0
"""Generous deadline for anything a test waits for (never a timing assertion)."""

_names = itertools.count()
T = TypeVar("T")


def wait_until(check: Callable[[], T | None], what: str, deadline_s: float = DEADLINE_S) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what} after {deadline_s:g} s")
        time.sleep(0.02)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def short_tmp_dir() -> Path:
    """A short directory under /tmp (Unix socket paths must stay below 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="sdd-", dir="/tmp"))


def unique_detector() -> str:
    """A detector name no other test (or test run) uses."""
    return f"drvtest{os.getpid()}n{next(_names)}"


def write_config(directory: Path, detector: str, **fields: Any) -> Path:
    """A small DAQ config (pco, 32x48 uint16) in `directory`; `fields` override."""
    ipc_dir = directory / "ipc"
    ipc_dir.mkdir(exist_ok=True)
    config = {
        "detector_name": detector,
        "detector_type": "pco",
        "n_modules": 1,
        "bit_depth": 16,
        "image_pixel_height": 32,
        "image_pixel_width": 48,
        "start_udp_port": 0,
        "module_positions": {},
        "number_of_writers": 1,
        "ipc_dir": str(ipc_dir),
        "stats_collection_period": 1,
        **fields,
    }
    path = directory / "daq.json"
    path.write_text(json.dumps(config, indent=2))
    return path


class DriverProcess:
    """`python -m stddaq_driver CONFIG ...` as a subprocess, stopped by its PID."""

    def __init__(
        self,
        config_path: Path,
        allowed_root: Path,
        *,
        token: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.rest_port = free_port()
        self.ws_port = free_port()
        self.log_path = config_path.parent / "driver.log"
        args = [
            sys.executable, "-m", "stddaq_driver", str(config_path),
            "--allowed-root", str(allowed_root),
            "--rest-port", str(self.rest_port), "--ws-port", str(self.ws_port),
            *(extra_args or []),
        ]
        env = {key: value for key, value in os.environ.items() if not key.startswith("STDDAQ_")}
        if token is not None:
            env["STDDAQ_DRIVER_TOKEN"] = token
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self._log, env=env
        )
        self.ready_line = self._read_ready()
        self.url = f"http://127.0.0.1:{self.rest_port}/api/v1"
        self.ws_url = f"ws://127.0.0.1:{self.ws_port}"
        self.http = httpx.Client(base_url=self.url, timeout=DEADLINE_S)

    def _read_ready(self) -> str:
        assert self.process.stdout is not None
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            if self.process.poll() is not None:
                break
            readable, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if readable:
                line = self.process.stdout.readline().decode()
                if line.startswith("READY"):
                    return line.strip()
        self.stop()
        raise AssertionError(f"the driver did not get ready:\n{self.log()}")

    def log(self) -> str:
        """What the driver logged so far."""
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        """GET /status."""
        response = self.http.get("/status")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_for_state(self, *states: str, what: str = "") -> dict[str, Any]:
        """Poll the status until its state is one of `states`; return that status."""
        def check() -> dict[str, Any] | None:
            status = self.status()
            return status if status["state"] in states else None
        return wait_until(check, what or f"state {states}")

    def wait_writers_alive(self) -> None:
        """Until every writer was heard from (a start would be refused before)."""
        wait_until(
            lambda: all(writer["alive"] for writer in self.status()["writers"]),
            "every writer alive",
        )

    def wait_idle_after(self, acquisition_id: int) -> dict[str, Any]:
        """Until acquisition `acquisition_id` ended and the driver is idle again."""
        def check() -> dict[str, Any] | None:
            status = self.status()
            done = status["acquisition_id"] == acquisition_id and status["state"] == "idle"
            return status if done else None
        return wait_until(check, f"acquisition {acquisition_id} back to idle")

    def stop(self) -> int:
        """SIGTERM by PID, wait (kill after the deadline); the exit status."""
        if hasattr(self, "http"):
            self.http.close()
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(DEADLINE_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
        return self.process.returncode


class Producer:
    """Publishes ImageMetadata on `D-image` as a receiver would (no ring: fake writers)."""

    def __init__(self, detector: str, ipc_dir: Path, height: int = 32, width: int = 48) -> None:
        self.publisher = MetadataPublisher(f"ipc://{ipc_dir}/{detector}-image")
        self.height = height
        self.width = width

    def publish(self, *image_ids: int) -> None:
        """Publish these ids (each must be accepted: no drop in a test)."""
        for image_id in image_ids:
            meta = ImageMeta(
                image_id, self.height, self.width, self.height * self.width * 2, Dtype.UINT16
            )
            assert self.publisher.publish(meta), "the publisher dropped a message"

    def close(self) -> None:
        """Close the socket (removes the socket file)."""
        self.publisher.close()
