"""The service images: slim (only what the service imports), right user, PID 1 stops cleanly."""

from __future__ import annotations

import json
import time

import docker
import pytest

from tests.compose.conftest import VERSION, record
from tests.compose.engine import wait_for

RUNTIME_ONLY = {
    "stddaq/driver": {"h11", "idna"},
    "stddaq/web": {"h11", "httpcore", "certifi", "websockets"},
}
"""Distributions imported only once the service runs, not at import: uvicorn loads h11
(its HTTP/1.1 protocol) when it starts serving, anyio loads idna to encode host names;
the web page's httpx loads httpcore and certifi with its first client, and uvicorn
websockets with the first WebSocket."""
ONLY_IN = {
    "h5py": {"stddaq/writer", "stddaq/driver"},
    "hdf5plugin": {"stddaq/writer", "stddaq/driver"},
    "fastapi": {"stddaq/driver", "stddaq/web"},
}


def test_each_image_holds_only_what_its_service_imports(
    client: docker.DockerClient, images: list[str]
) -> None:
    for tag in images:
        repository = tag.rsplit(":", 1)[0]
        output = client.containers.run(
            tag, entrypoint=["stddaq-image-check", "--json"], network_mode="host", remove=True
        )
        report = json.loads(output)
        unused = set(report["unused"]) - RUNTIME_ONLY.get(repository, set())
        assert not unused, f"{tag} holds distributions its service never imports: {sorted(unused)}"
        for distribution, owner in ONLY_IN.items():
            assert (distribution in report["installed"]) == (repository in owner), (tag, distribution)
        size = client.images.get(tag).attrs["Size"]
        record(f"image {tag}", f"{size / 1e6:.0f} MB, {len(report['installed'])} distributions")


def test_images_run_as_their_user_with_the_service_as_pid_1(
    client: docker.DockerClient, images: list[str]
) -> None:
    for tag in images:
        config = client.images.get(tag).attrs["Config"]
        expected_user = "root" if tag.startswith("stddaq/writer:") else "stddaq"
        assert config["User"] == expected_user, tag
        assert config["Entrypoint"] == ["/opt/stddaq/venv/bin/stddaq-service"], tag
        assert config["Labels"]["org.opencontainers.image.version"] == VERSION, tag
        assert "PYTHONUNBUFFERED=1" in config["Env"], tag


def test_the_service_as_pid_1_stops_cleanly_on_sigterm(
    client: docker.DockerClient, images: list[str]
) -> None:
    container = client.containers.run(
        f"stddaq/fake-camera:{VERSION}",
        command=["--address", "tcp://127.0.0.1:*", "--shape", "8", "8", "--rate", "10"],
        network_mode="host",
        detach=True,
    )
    try:
        wait_for("the fake camera's READY line", lambda: b"READY fake_camera" in container.logs(), 60)
        top = container.top(ps_args="-o pid,args")
        # PID 1 names its service in ps: the entry point execs the service's own script.
        assert "/opt/stddaq/venv/bin/stddaq-fake-camera --address" in top["Processes"][0][-1], top
        started = time.monotonic()
        container.stop(timeout=20)
        seconds = time.monotonic() - started
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0, container.logs()[-2000:]
        assert seconds < 15, f"docker stop took {seconds:.1f} s: SIGTERM was not handled"
        record("docker stop of a service (SIGTERM to PID 1)", f"{seconds:.2f} s, exit code 0")
    finally:
        container.remove(force=True)


@pytest.mark.parametrize("tag", ["stddaq/receiver", "stddaq/writer", "stddaq/driver", "stddaq/live-stream"])
def test_every_service_answers_its_help(client: docker.DockerClient, images: list[str], tag: str) -> None:
    output = client.containers.run(f"{tag}:{VERSION}", ["--help"], network_mode="host", remove=True)
    assert b"CONFIG" in output
