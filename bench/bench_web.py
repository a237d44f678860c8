"""The web page's cost: CPU of the web service per displayed image of 2048 x 2048 uint16.

Processes: this one publishes array-1.0 images (the camera's frames, 2048 x 2048 uint16)
5 times a second on a PUB socket, as a periodic live stream does; the web service
(`python -m stddaq_web`) subscribes to it; a page (a WebSocket client here, acknowledging
every frame as app.js does, at the page size of a 1000 x 1000 canvas) receives the 8-bit
frames. The web service's CPU (user + system, from /proc) over the run divided by the
frames the page received is the CPU per displayed image; its ceiling is the frame period
at 5 images/s (200 ms): the ratio is the share of one core the page costs.

Also measured in-process, for comparison: the numpy part alone (render + encode of one
frame), beside one numpy pass over the image (its max) as the floor of any per-pixel work.

Then what a page costs an acquisition: the end-to-end benchmark's stack (bench/e2e_stack.py,
2 MiB frames, 2 writers, every image read back) with its live stream made periodic (5
images/s, as the web page's stream is), and the lossless-rate search of
bench_end_to_end.py run with the web service and a page (a WebSocket client acknowledging
every frame) open, then without them: the ratio is the rate with a page over the rate
without. Quick mode, as there: a short search with the page, then one step at the same rate
without it (a lossless burst, not a sustained rate). Only with `--acquisition` or in full
mode (it takes minutes).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import zmq

from bench.harness import BenchRecord, record
from stddaq_common.testing.configs import pco_config
from stddaq_fake_camera.frames import FramePattern
from stddaq_stack.proc_stats import cpu_seconds
from stddaq_web.frame_message import decode_frame, encode_frame
from stddaq_web.render import View, render

SIDE = 2048
RATE_HZ = 5.0
CANVAS = 1000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(directory: Path, address: str) -> Path:
    document = pco_config(
        f"bweb-{uuid.uuid4().hex[:8]}", SIDE, SIDE,
        ipc_dir=str(directory),
        stats_collection_period=5,
        live_stream_configs={address: {"type": "periodic", "config": [1, int(RATE_HZ)]}},
    )  # fmt: skip
    path = directory / "daq.json"
    path.write_text(json.dumps(document))
    return path


def _publish(address: str, stop: threading.Event, pattern: FramePattern) -> None:
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 4)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(address)
    image_id = 0
    next_at = time.monotonic()
    while not stop.is_set():
        frame = pattern.frame(image_id)
        header = f'{{"htype":"array-1.0", "shape":[{SIDE},{SIDE}], "type":"uint16", "frame":{image_id}}}'
        pub.send_multipart([header.encode(), memoryview(np.ascontiguousarray(frame))], copy=False)
        image_id += 1
        next_at += 1 / RATE_HZ
        stop.wait(max(0.0, next_at - time.monotonic()))
    pub.close(0)
    context.term()


async def _page(url: str, seconds: float, step: int | None = -(-SIDE // CANVAS)) -> int:
    """Frames received (and acknowledged) in `seconds`; only those at `step` (None: all)."""
    from websockets.asyncio.client import connect

    frames = 0
    async with connect(url, max_size=64 << 20) as socket_:
        await socket_.send(json.dumps({"type": "view", "max_w": CANVAS, "max_h": CANVAS}))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                left = max(0.1, deadline - time.monotonic())
                message = await asyncio.wait_for(socket_.recv(), timeout=left)
            except TimeoutError:
                break
            if isinstance(message, bytes):
                header, _ = decode_frame(message)
                # (the first frame may come before the server took the view in)
                frames += step is None or header["step"] == step
                await socket_.send('{"type":"ack"}')
    return frames


def _service_cpu(seconds: float, pattern: FramePattern) -> tuple[float, int]:
    """(CPU seconds of the web service, frames the page received) over `seconds`."""
    directory = Path(tempfile.mkdtemp(prefix="bweb", dir="/tmp"))
    address = f"tcp://127.0.0.1:{_free_port()}"
    port = _free_port()
    config = _config(directory, address)
    stop = threading.Event()
    publisher = threading.Thread(target=_publish, args=(address, stop, pattern), daemon=True)
    publisher.start()
    process = subprocess.Popen(
        [sys.executable, "-m", "stddaq_web", str(config), "--port", str(port),
         "--driver-url", f"http://127.0.0.1:{_free_port()}", "--log-level", "err"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("READY web"):
            raise RuntimeError(f"the web service did not start: {line!r}")
        asyncio.run(_page(f"ws://127.0.0.1:{port}/ws", 3.0))  # warm up: first frames, imports
        before = cpu_seconds(process.pid) or 0.0
        frames = asyncio.run(_page(f"ws://127.0.0.1:{port}/ws", seconds))
        after = cpu_seconds(process.pid) or 0.0
        return after - before, frames
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(30)
        stop.set()
        publisher.join(10)
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()


def _in_process(pattern: FramePattern, repeats: int) -> tuple[float, float]:
    """(CPU s per render + encode, CPU s per numpy max) of a 2048 x 2048 uint16 frame."""
    view = View(max_w=CANVAS, max_h=CANVAS)
    frames = [np.array(pattern.frame(i)) for i in range(repeats)]
    started = time.process_time()
    for frame in frames:
        shown = render(frame, view)
        encode_frame(shown.header(), shown.pixels)
    prepare = (time.process_time() - started) / repeats
    started = time.process_time()
    for frame in frames:
        frame.max()
    one_pass = (time.process_time() - started) / repeats
    return prepare, one_pass


class _PageThread:
    """A page (WebSocket client acknowledging every frame) in a thread until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames += asyncio.run(_page(self.url, 2.0, None))
            except OSError:
                time.sleep(0.5)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(30)
        return self.frames


def _acquisition_with_and_without_page(quick: bool) -> list[BenchRecord]:
    """The lossless-rate search with a page open, then without (see the module docstring)."""
    from bench import bench_end_to_end as e2e
    from bench.e2e_stack import BenchStack
    from stddaq_stack.child import Child, ProcessSpec

    n = 400 if quick else 2000
    workdir = Path(tempfile.mkdtemp(prefix="stddaq-bench-web-", dir="/tmp"))
    log = (workdir / "stack.log").open("w")
    stack: BenchStack | None = None
    web: Child | None = None
    try:
        stack = BenchStack(workdir, e2e.WRITERS, log)
        document = json.loads(stack.config_path.read_text())
        document["live_stream_configs"] = {stack.live_address: {"type": "periodic", "config": [1, 5]}}
        stack.config_path.write_text(json.dumps(document))
        stack.start()
        stack.live_on(e2e.VIEWER_CHECK_EVERY)
        port = _free_port()
        argv = [sys.executable, "-m", "stddaq_web", str(stack.config_path), "--port", str(port),
                "--driver-url", stack.client.base_url, "--log-level", "warn"]
        web = Child(ProcessSpec("web", argv, restart=False), log, 12)
        web.start()
        if not web.wait_ready(120.0):
            raise RuntimeError("the web service did not start")
        page = _PageThread(f"ws://127.0.0.1:{port}/ws")
        with_page, steps = e2e.find_lossless_rate(stack, n, 10_000.0, quick, "page")
        frames = page.stop()
        web.stop(30.0)
        web = None
        if quick:
            rate = with_page.rate_hz if with_page is not None else steps[-1].rate_hz
            without, _ = e2e.search(stack, rate, n, 1, 1.0, 0, "nopage")
        else:
            without, _ = e2e.find_lossless_rate(stack, n, 10_000.0, quick, "nopage")
    finally:
        if web is not None:
            web.stop(30.0)
        if stack is not None:
            stack.close()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    fps_with = with_page.achieved_fps if with_page is not None else 0.0
    fps_without = without.achieved_fps if without is not None else 0.0
    lost = with_page.lost if with_page is not None else steps[-1].lost
    return [
        record("acquisition lossless rate with a web page open", fps_with, "frames/s",
               "the same without a page", fps_without, lost=lost),
        record("web frames a page displayed during that search", float(frames), "frames"),
    ]


def run(quick: bool) -> list[BenchRecord]:
    """The web service's CPU per displayed image and, in full mode or with --acquisition,
    the acquisition's lossless rate with and without a page (see the module docstring)."""
    pattern = FramePattern((SIDE, SIDE), np.dtype("<u2"))
    seconds = 8.0 if quick else 30.0
    cpu, frames = _service_cpu(seconds, pattern)
    prepare, one_pass = _in_process(pattern, 5 if quick else 20)
    per_image = cpu / max(frames, 1)
    acquisition = []
    if not quick or "--acquisition" in sys.argv:
        acquisition = _acquisition_with_and_without_page(quick)
    return [
        *acquisition,
        record("web CPU per displayed image (2048x2048 u16, 5/s)", per_image * 1e3, "ms",
               "frame period at 5 images/s", 1e3 / RATE_HZ, lost=None),
        record("web frames displayed (page acks each)", frames / seconds, "frames/s",
               "images published", RATE_HZ),
        record("web numpy render+encode per image (in-process)", prepare * 1e3, "ms",
               "one numpy pass (max) over the image", one_pass * 1e3),
    ]


if __name__ == "__main__":
    for item in run(quick="--quick" in sys.argv):
        print(item)
