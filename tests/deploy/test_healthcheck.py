"""The container healthcheck (docker/stddaq_health.py) against real sockets and files."""

from __future__ import annotations

import fcntl
import http.server
import importlib.util
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.tools import REPO


def load_health() -> ModuleType:
    """docker/stddaq_health.py as a module (it is a script in the images)."""
    spec = importlib.util.spec_from_file_location("stddaq_health", REPO / "docker" / "stddaq_health.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


health = load_health()


class Stops:
    """Counts the service stops a check asks for (instead of signalling PID 1)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def shm(tmp_path: Path) -> Path:
    folder = tmp_path / "shm"
    folder.mkdir()
    return folder


def make_ring(shm: Path, name: str) -> None:
    (shm / name).write_bytes(b"\0" * 64)
    (shm / f"{name}.stddaq").write_bytes(b"\0" * 64)


@pytest.fixture
def owner_lock(shm: Path) -> Iterator[None]:
    """The receiver's exclusive flock on the companion segment of ring D-image."""
    make_ring(shm, "D-image")
    fd = os.open(shm / "D-image.stddaq", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
    os.close(fd)


def test_a_ring_with_a_live_owner_is_healthy(shm: Path, owner_lock: None, tmp_path: Path) -> None:
    state = health.ring_state("D-image", str(shm))
    assert state.exists and state.owner_alive
    stops = Stops()
    health.check_ring("D-image", True, shm_dir=str(shm), state_dir=str(tmp_path), stop=stops)
    assert stops.count == 0
    # the probe never keeps a lock: the owner could take its lock again at once
    fd = os.open(shm / "D-image.stddaq", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_a_missing_ring_is_unhealthy(shm: Path, tmp_path: Path) -> None:
    assert health.ring_state("D-image", str(shm)) == health.RingState(exists=False, owner_alive=False)
    with pytest.raises(health.CheckFailed, match="does not exist"):
        health.check_ring("D-image", False, shm_dir=str(shm), state_dir=str(tmp_path))


def test_an_orphaned_ring_stops_the_service(
    shm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_ring(shm, "D-image")  # no process holds the lock: the owner is gone
    monkeypatch.setattr(health, "ORPHAN_GRACE_S", 0.01)
    with pytest.raises(health.CheckFailed, match="no live owner"):
        health.check_ring("D-image", False, shm_dir=str(shm), state_dir=str(tmp_path))
    stops = Stops()
    with pytest.raises(health.CheckFailed, match="new IPC namespace"):
        health.check_ring("D-image", True, shm_dir=str(shm), state_dir=str(tmp_path), stop=stops)
    assert stops.count == 1


def test_a_ring_missing_for_long_stops_the_service_a_short_gap_does_not(shm: Path, tmp_path: Path) -> None:
    stops = Stops()
    with pytest.raises(health.CheckFailed, match="does not exist"):
        health.check_ring("D-image", True, shm_dir=str(shm), state_dir=str(tmp_path), stop=stops)
    assert stops.count == 0, "a receiver still starting is no reason to stop"
    marker = tmp_path / "stddaq-health-D-image.missing-since"
    marker.write_text(repr(time.monotonic() - health.MISSING_GRACE_S - 1))
    with pytest.raises(health.CheckFailed, match="has been missing"):
        health.check_ring("D-image", True, shm_dir=str(shm), state_dir=str(tmp_path), stop=stops)
    assert stops.count == 1
    assert not marker.exists()


def test_a_ring_that_comes_back_clears_the_missing_mark(shm: Path, tmp_path: Path) -> None:
    with pytest.raises(health.CheckFailed):
        health.check_ring("D-image", True, shm_dir=str(shm), state_dir=str(tmp_path), stop=Stops())
    make_ring(shm, "D-image")
    fd = os.open(shm / "D-image.stddaq", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        health.check_ring("D-image", True, shm_dir=str(shm), state_dir=str(tmp_path), stop=Stops())
    finally:
        os.close(fd)
    assert not (tmp_path / "stddaq-health-D-image.missing-since").exists()


def test_unix_socket_check(tmp_path: Path) -> None:
    path = str(tmp_path / "D-image")
    with pytest.raises(health.CheckFailed):
        health.check_unix(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen()
        health.check_unix(path)
    with pytest.raises(health.CheckFailed, match="refused"):
        health.check_unix(path)  # the socket file is left, nobody listens


def test_tcp_check_and_wildcard_hosts() -> None:
    assert health.split_host_port("*:20000") == ("127.0.0.1", 20000)
    assert health.split_host_port("0.0.0.0:5") == ("127.0.0.1", 5)
    with pytest.raises(health.CheckFailed):
        health.split_host_port("nohost")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        health.check_tcp(f"tcp://127.0.0.1:{port}")
    with pytest.raises(health.CheckFailed):
        health.check_tcp(f"127.0.0.1:{port}")


class _Handler(http.server.BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, object]] = {}

    def do_GET(self) -> None:
        code, body = self.answers.get(self.path, (404, {"detail": "no"}))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_and_writer_checks(web: str) -> None:
    _Handler.answers = {
        "/ok": (200, {"ok": True, "silent_writers": [1]}),
        "/bad": (200, {"ok": False}),
        "/down": (503, {"detail": "no"}),
    }
    health.check_http(f"{web}/ok")
    with pytest.raises(health.CheckFailed, match="ok is False"):
        health.check_http(f"{web}/bad")
    with pytest.raises(health.CheckFailed, match="HTTP 503"):
        health.check_http(f"{web}/down")
    health.check_writer_heard(f"{web}/ok", 0)
    with pytest.raises(health.CheckFailed, match="writer 1"):
        health.check_writer_heard(f"{web}/ok", 1)
    with pytest.raises(health.CheckFailed):
        health.check_http("http://127.0.0.1:1/nothing")


def test_main_runs_every_check_and_says_why(web: str, capsys: pytest.CaptureFixture[str]) -> None:
    _Handler.answers = {"/ok": (200, {"ok": True, "silent_writers": []})}
    assert health.main(["--http", f"{web}/ok", "--writer-heard", f"{web}/ok", "0"]) == 0
    assert capsys.readouterr().out == "healthy\n"
    assert health.main(["--http", f"{web}/ok", "--http", f"{web}/missing"]) == 1
    assert capsys.readouterr().out.startswith("unhealthy: ")
    with pytest.raises(SystemExit):
        health.main(["--exit-if-orphaned"])
