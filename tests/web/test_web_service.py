"""The web service as a process, without a browser: its frames over the WebSocket from a
real array-1.0 publisher, the refusals of bad page messages, a driver that does not answer,
and startup errors that name what is wrong."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import zmq

from stddaq_common.wire.array10 import encode_array10
from stddaq_web.frame_message import decode_frame
from tests.common.configs import pco_config

HEIGHT, WIDTH = 60, 80


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(directory: Path, streams: dict[str, Any]) -> Path:
    path = directory / "daq.json"
    document = pco_config(f"wsv-{uuid.uuid4().hex[:8]}", HEIGHT, WIDTH, ipc_dir=str(directory),
                          live_stream_configs=streams)
    path.write_text(json.dumps(document))
    return path


def start_web(config: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stddaq_web", str(config), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(30)


class Publisher:
    """Publishes array-1.0 images (ids from 1, each image = id + its pixel index) until closed."""

    def __init__(self, address: str) -> None:
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(address)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def image(image_id: int) -> np.ndarray[Any, np.dtype[np.uint16]]:
        return (np.arange(HEIGHT * WIDTH, dtype=np.uint16) + image_id).reshape(HEIGHT, WIDTH)

    def _run(self) -> None:
        image_id = 1
        while not self._stop.wait(0.05):
            self._socket.send_multipart(encode_array10(self.image(image_id), image_id))
            image_id += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._socket.close(0)
        self._context.term()


@pytest.fixture()
def web(tmp_path: Path) -> Iterator[tuple[str, Publisher]]:
    address = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(tmp_path, {address: {"type": "periodic", "config": [1, 5]}})
    publisher = Publisher(address)
    port = free_port()
    process = start_web(config, "--port", str(port), "--driver-url", f"http://127.0.0.1:{free_port()}")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("READY web"), line + (process.stderr.read() if process.stderr else "")
        yield f"127.0.0.1:{port}", publisher
    finally:
        stop(process)
        publisher.close()


async def _session(
    host: str, messages: list[dict[str, Any] | str]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Send `messages`, then read until 2 frames (each acknowledged) and 3 errors came."""
    from websockets.asyncio.client import connect

    texts: list[dict[str, Any]] = []
    frames: list[bytes] = []
    async with connect(f"ws://{host}/ws", max_size=1 << 24) as page:
        for message in messages:
            await page.send(message if isinstance(message, str) else json.dumps(message))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(frames) < 2 or _errors(texts) < 3):
            received = await asyncio.wait_for(page.recv(), 60)
            if isinstance(received, bytes):
                frames.append(received)
                await page.send('{"type": "ack"}')
            else:
                texts.append(json.loads(received))
    return texts, frames


def _errors(texts: list[dict[str, Any]]) -> int:
    return sum(text["type"] == "error" for text in texts)


def test_frames_hold_the_published_image_after_the_documented_mapping(web: tuple[str, Publisher]) -> None:
    host, publisher = web
    view = {"type": "view", "x0": 10, "y0": 5, "w": 40, "h": 30, "max_w": 20, "max_h": 15,
            "auto": False, "lo": 100, "hi": 4000}
    bad = ["not json", {"type": "view", "x0": "left"}, {"type": "teleport"}]
    texts, frames = asyncio.run(_session(host, [view, *bad]))
    errors = [t["detail"] for t in texts if t["type"] == "error"]
    assert len(errors) == 3 and "x0" in errors[1] and "teleport" in errors[2], errors
    header, pixels = decode_frame(frames[-1])
    assert (header["region"], header["step"], header["lo"], header["hi"]) == ([10, 5, 40, 30], 2, 100, 4000)
    shown = publisher.image(header["image_id"])[5:35:2, 10:50:2].astype(np.int64)
    assert np.array_equal(pixels, ((np.clip(shown, 100, 4000) - 100) * 255 // 3900).astype(np.uint8))
    status = next(t for t in texts if t["type"] == "status")
    assert status["health"]["driver"]["up"] is False


def test_a_driver_that_does_not_answer_is_a_clear_502(web: tuple[str, Publisher]) -> None:
    host, _ = web
    answer = httpx.post(f"http://{host}/api/start", json={"path": "/data/x"}, timeout=30)
    assert answer.status_code == 502
    assert "does not answer" in answer.json()["detail"]
    assert httpx.get(f"http://{host}/api/health", timeout=30).json()["ok"] is True


def test_without_a_periodic_stream_the_page_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path, {f"tcp://127.0.0.1:{free_port()}": {"type": "forward"}})
    port = free_port()
    process = start_web(config, "--port", str(port))
    try:
        assert process.stdout is not None and process.stdout.readline().startswith("READY web")
        state = httpx.get(f"http://127.0.0.1:{port}/api/state", timeout=30).json()
        assert state["image"]["stream"] is None
        assert any("no periodic stream" in note for note in state["notes"])
    finally:
        stop(process)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--stream", "tcp://127.0.0.1:1"], "is not in live_stream_configs"),
        (["--metrics", "receiver"], "expected NAME=http://host:port/metrics"),
        (["--token-file", "/nonexistent/token"], "cannot read the token file"),
        (["--port", "PORT_IN_USE"], "cannot listen on 127.0.0.1:"),
    ],
)
def test_a_bad_option_is_a_startup_error_naming_it(tmp_path: Path, options: list[str], words: str) -> None:
    config = write_config(tmp_path, {})
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = str(holder.getsockname()[1])
        argv = [taken if item == "PORT_IN_USE" else item for item in options]
        if "--port" not in argv:
            argv += ["--port", str(free_port())]
        process = start_web(config, *argv)
        _, error = process.communicate(timeout=60)
    assert process.returncode == 1
    assert words in error, error
