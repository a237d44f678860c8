"""Running the driver as a real process for tests, and waiting for things without timing."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from stddaq_common.bus.metadata import Dtype, ImageMeta
from stddaq_common.bus.metadata_stream import MetadataPublisher
from stddaq_common.testing import processes as testing
from stddaq_common.testing.configs import pco_config

DEADLINE_S = 30.0
"""Generous deadline for anything a test waits for (never a timing assertion)."""

_names = itertools.count()
T = TypeVar("T")


def wait_until(check: Callable[[], T | None], what: str, deadline_s: float = DEADLINE_S) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    return testing.wait_until(what, check, deadline_s, every=0.02)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    return testing.free_port()


def short_tmp_dir() -> Path:
    """A short directory under /tmp (Unix socket paths must stay below 108 bytes)."""
    return testing.short_tmp_dir("sdd-")


def unique_detector() -> str:
    """A detector name no other test (or test run) uses."""
    return f"drvtest{os.getpid()}n{next(_names)}"


def write_config(directory: Path, detector: str, **fields: Any) -> Path:
    """A small DAQ config (pco, 32x48 uint16) in `directory`; `fields` override."""
    ipc_dir = directory / "ipc"
    ipc_dir.mkdir(exist_ok=True)
    defaults = {"number_of_writers": 1, "ipc_dir": str(ipc_dir), "stats_collection_period": 1}
    config = pco_config(detector, 32, 48, **{**defaults, **fields})
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
        self.child = testing.ChildProcess(args, name="driver", stderr=self.log_path, base_env=env).start()
        self.process = self.child.popen
        self.ready_line = self._read_ready()
        self.url = f"http://127.0.0.1:{self.rest_port}/api/v1"
        self.ws_url = f"ws://127.0.0.1:{self.ws_port}"
        self.http = httpx.Client(base_url=self.url, timeout=DEADLINE_S)

    def _read_ready(self) -> str:
        if self.child.wait_ready(DEADLINE_S) and self.child.ready_line is not None:
            return self.child.ready_line.strip()
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
        return testing.stop_service(self.child, deadline_s=DEADLINE_S)


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
