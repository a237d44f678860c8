"""How the driver tells whether the receiver runs: a live process on its metadata socket."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from stddaq_driver.receiver_watch import ReceiverWatch, look_at, with_receiver_named
from tests.driver.harness import short_tmp_dir


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short folder under /tmp for socket files (removed afterwards)."""
    path = short_tmp_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_live_publisher_a_dead_ones_socket_file_and_no_file(folder: Path) -> None:
    address = f"ipc://{folder}/det-image"
    assert look_at(address).alive is False
    assert "no socket at" in str(look_at(address).problem)
    publisher = zmq.Context.instance().socket(zmq.PUB)
    publisher.bind(address)
    try:
        seen = look_at(address)
        assert (seen.alive, seen.problem) == (True, None)
    finally:
        publisher.close(linger=0)
    # A process that died leaves its socket file, with nobody listening on it.
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(folder / "dead-image"))
    left.close()
    assert Path(folder / "dead-image").exists()
    dead = look_at(f"ipc://{folder}/dead-image")
    assert dead.alive is False and "no process serves" in str(dead.problem)
    assert with_receiver_named("writer 1 sent nothing", dead).startswith("the receiver is not running")
    assert look_at("tcp://127.0.0.1:5555").alive is None, "not a socket file: cannot tell"


def test_the_answer_is_kept_for_a_second_per_address(folder: Path) -> None:
    address = f"ipc://{folder}/det-image"
    watch = ReceiverWatch(check_every_s=3600.0)
    assert watch.view(address).alive is False
    publisher = zmq.Context.instance().socket(zmq.PUB)
    publisher.bind(address)
    try:
        assert watch.view(address).alive is False, "kept"
        assert ReceiverWatch(check_every_s=0.0).view(address).alive is True
        other = f"ipc://{folder}/other-image"
        assert watch.view(other).alive is False and watch.view(other).address == other
    finally:
        publisher.close(linger=0)
