"""Fixtures of the container tests: the engine, the images, and the figures they measure.

These tests need a Docker engine (DOCKER_HOST) and run with `make test-compose`; in
`make test` they skip. With STDDAQ_COMPOSE_REQUIRED=1 (.ci/run) a missing engine fails
them instead, so that CI can never pass with the container tests skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import docker
import pytest

from tests.compose.engine import REPO, engine_or_skip

IMAGES = ["fake-camera", "receiver", "writer", "driver", "live-stream", "web"]
VERSION = "0.1.0"
FIGURES: dict[str, str] = {}
"""What the tests measured (printed at the end, and written to build/compose-figures.json)."""


def record(name: str, value: str) -> None:
    """Keep one measured figure for the summary."""
    FIGURES[name] = value


@pytest.fixture(scope="session")
def client() -> Iterator[docker.DockerClient]:
    """The Docker engine at DOCKER_HOST (skips the tests without one)."""
    engine = engine_or_skip()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def images(client: docker.DockerClient) -> list[str]:
    """The service images, built (or found current: cached layers) by docker/build-images.sh."""
    env = dict(os.environ)
    base = env.setdefault("BASE_IMAGE", "python:3.11-slim-bookworm")
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "docker/build-images.sh"], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(
            f"building the images on {base} failed (machines that cannot pull build a local base "
            f"image: scripts/ci-docker.sh base-image, then BASE_IMAGE=stddaq-base:bookworm):\n"
            f"{done.stderr[-6000:]}"
        )
    record("image build (this run, cached layers if any)", f"{time.monotonic() - started:.0f} s")
    tags = [f"stddaq/{image}:{VERSION}" for image in IMAGES]
    for tag in tags:
        client.images.get(tag)
    return tags


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the measured figures (image sizes, times) after the tests."""
    if not FIGURES:
        return
    terminalreporter.section("stddaq container figures")
    width = max(len(name) for name in FIGURES)
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name:<{width}}  {value}")
    out = REPO / "build" / "compose-figures.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(FIGURES, indent=2) + "\n")
