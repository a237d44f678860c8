"""Helpers of the container tests: the engine, Compose projects, the driver, the files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import h5py
import hdf5plugin  # noqa: F401  (the bitshuffle filter, for compressed files)
import httpx
import numpy as np
import pytest
from docker.models.containers import Container

from stddaq_common.testing.processes import wait_until
from stddaq_fake_camera.frames import FramePattern

REPO = Path(__file__).resolve().parents[2]
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"


def engine_or_skip() -> docker.DockerClient:
    """A client of the engine at DOCKER_HOST; skip (or, when required, fail) without one."""
    if os.environ.get("STDDAQ_COMPOSE_TESTS") != "1":
        pytest.skip("container tests run with `make test-compose` (they build images and start stacks)")
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock (DOCKER_HOST is not set)")
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as error:
        reason = f"no Docker engine answers at {where}: {error}"
        if os.environ.get("STDDAQ_COMPOSE_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return client


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:`port` (the stacks use the host network)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(what: str, condition: Callable[[], bool], timeout: float, period: float = 0.5) -> float:
    """Poll `condition` until true; the seconds it took. Fails the test after `timeout`."""
    start = time.monotonic()
    try:
        wait_until(what, condition, timeout, every=period)
    except AssertionError:
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
    return time.monotonic() - start


@dataclass
class ComposeProject:
    """One Compose project run through the `docker compose` CLI plugin."""

    name: str
    directory: Path
    env: dict[str, str]
    profiles: list[str] = field(default_factory=list)

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        """Run `docker compose ARGS` for this project; its output (fails the test on error)."""
        command = ["docker", "compose", "--project-name", self.name]
        for profile in self.profiles:
            command += ["--profile", profile]
        done = subprocess.run(
            [*command, *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = done.stdout + done.stderr
        if check and done.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)} exited {done.returncode}:\n{output[-6000:]}")
        return output

    def containers(self, client: docker.DockerClient) -> dict[str, Container]:
        """The project's containers (also stopped ones) by Compose service name; a service
        of several containers (the keepers) as `<service>-<number>`."""
        found = client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={self.name}"})
        per_service: dict[str, list[Container]] = {}
        for container in found:
            per_service.setdefault(container.labels[SERVICE_LABEL], []).append(container)
        named: dict[str, Container] = {}
        for service, members in per_service.items():
            for container in members:
                number = container.labels.get(NUMBER_LABEL, "1")
                named[service if len(members) == 1 else f"{service}-{number}"] = container
        return named

    def ps(self) -> dict[str, dict[str, Any]]:
        """`docker compose ps --all` by service: State, Health, ExitCode..."""
        output = self("ps", "--all", "--format", "json")
        rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        return {row["Service"]: row for row in rows}


def health_of(container: Container) -> str:
    """The container's health status right now ("healthy", "starting", "unhealthy", ...)."""
    container.reload()
    state = container.attrs["State"]
    if not state.get("Running"):
        return state.get("Status", "?")
    return str(state.get("Health", {}).get("Status", "none"))


def all_healthy(containers: list[Container]) -> bool:
    """True if every container runs and is healthy."""
    return all(health_of(c) == "healthy" for c in containers)


def host_pid(container: Container) -> int:
    """The host PID of the container's PID 1 (the service)."""
    container.reload()
    return int(container.attrs["State"]["Pid"])


def ipc_namespace(pid: int) -> str:
    """The IPC namespace of a host process, e.g. 'ipc:[4026532180]'."""
    return os.readlink(f"/proc/{pid}/ns/ipc")


@dataclass
class Driver:
    """The driver's REST API of one stack."""

    url: str
    token: str | None = None

    def _headers(self, token: str | None) -> dict[str, str]:
        use = token if token is not None else self.token
        return {"Authorization": f"Bearer {use}"} if use else {}

    def status(self) -> dict[str, Any]:
        """GET /api/v1/status."""
        answer = httpx.get(f"{self.url}/api/v1/status", timeout=10)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def start(self, token: str | None = None, **request: Any) -> httpx.Response:
        """POST /api/v1/start; the raw answer (callers check the code)."""
        return httpx.post(f"{self.url}/api/v1/start", json=request, headers=self._headers(token), timeout=30)

    def record(
        self, path: str, n_image: int, timeout: float = 300, **extra: Any
    ) -> tuple[dict[str, Any], float]:
        """Start an acquisition, wait until it ended; its final status and its seconds."""
        started = time.monotonic()
        answer = self.start(path=path, n_image=n_image, **extra)
        assert answer.status_code == 200, f"start refused: {answer.status_code} {answer.text}"
        acquisition_id = answer.json()["acquisition_id"]
        final: dict[str, Any] = {}

        def ended() -> bool:
            nonlocal final
            final = self.status()
            return (
                final["acquisition_id"] == acquisition_id
                and final["outcome"] is not None
                and not final["busy"]
            )

        wait_for(f"acquisition {acquisition_id} to end", ended, timeout, period=0.2)
        return final, time.monotonic() - started


def docker_socket() -> str:
    """The engine's unix socket (from DOCKER_HOST), which the keepers mount."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"


def check_saved(path: Path, detector: str, shape: tuple[int, int]) -> tuple[int, int]:
    """Every image an HDF5 file (or master file) records as written (status 1) equals the
    fake camera's frame of its id, the ids increase; (written, missing) record counts."""
    pattern = FramePattern(shape, np.dtype("<u2"))
    with h5py.File(path, "r") as file:
        data = file[f"{detector}/data"]
        metadata = np.asarray(file[f"{detector}/metadata"])
        assert data.shape[0] == len(metadata), f"{path}: {data.shape} for {len(metadata)} records"
        ids = metadata["image_id"].astype(np.int64)
        assert np.all(np.diff(ids) > 0), f"{path}: image ids not strictly increasing"
        written = 0
        for index, (image_id, status) in enumerate(zip(ids, metadata["status"], strict=True)):
            if status == 1:
                written += 1
                assert np.array_equal(data[index], pattern.frame(int(image_id))), f"{path}: image {image_id}"
        return written, len(metadata) - written


def check_images(path: Path, detector: str, shape: tuple[int, int], expected: int) -> None:
    """Every image of an HDF5 file (or master file) equals the fake camera's frame of its id."""
    pattern = FramePattern(shape, np.dtype("<u2"))
    with h5py.File(path, "r") as file:
        data = file[f"{detector}/data"]
        ids = np.asarray(file[f"{detector}/metadata"]["image_id"], dtype=np.int64)
        assert data.shape == (expected, *shape), f"{path}: {data.shape}"
        assert len(ids) == expected
        assert np.all(np.diff(ids) > 0), f"{path}: image ids not strictly increasing"
        for index, image_id in enumerate(ids):
            assert np.array_equal(data[index], pattern.frame(int(image_id))), f"{path}: image {image_id}"
