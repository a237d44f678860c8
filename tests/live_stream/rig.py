"""Test rig for the live stream: a producer (ring + metadata), the service as a process, viewers.

Every name is unique per test (detector name, ipc directory, TCP port), every process is
stopped by its PID, and nothing is left in /dev/shm or the ipc directory.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zmq

from stddaq_common.bus.metadata import Compression, Dtype, ImageMeta
from stddaq_common.bus.metadata_stream import MetadataPublisher
from stddaq_common.config.model import DaqConfig, load_config
from stddaq_common.names import shm_name
from stddaq_common.ring.geometry import ring_geometry
from stddaq_common.ring.image_ring import ImageRing
from stddaq_common.runtime.child_process import ChildProcess
from stddaq_common.testing.processes import free_port, stats_fields, wait_until
from stddaq_common.wire.compression import bitshuffle_lz4_compress
from tests.common.configs import pco_config

DEADLINE_S = 20.0
"""Generous bound on any single wait; never part of an assertion about speed."""

_names = itertools.count()


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_port()


def expected_image(image_id: int, height: int, width: int) -> npt.NDArray[np.uint16]:
    """The pixels the producer writes for `image_id` (every pixel depends on the id)."""
    index = np.arange(height * width, dtype=np.uint64)
    pixels = (index * np.uint64(2654435761) + np.uint64(image_id) * np.uint64(40503)) & np.uint64(0xFFFF)
    return pixels.astype(np.uint16).reshape(height, width)


@dataclass
class Setup:
    """A config file with live streams, in its own short-named ipc directory."""

    config_path: Path
    config: DaqConfig
    ipc_dir: str
    addresses: dict[str, str] = field(default_factory=dict)
    """Rate-mode label -> stream address."""


def make_setup(
    streams: dict[str, dict[str, Any]], height: int = 64, width: int = 64
) -> Setup:
    """A config with one live stream per entry of `streams` (label -> {type, config}), each on a free port."""
    ipc_dir = tempfile.mkdtemp(prefix="lst", dir="/tmp")
    name = f"lst{os.getpid()}x{next(_names)}"
    addresses = {label: f"tcp://127.0.0.1:{free_tcp_port()}" for label in streams}
    document = pco_config(
        name, height, width,
        ipc_dir=ipc_dir,
        stats_collection_period=3600,
        live_stream_configs={addresses[label]: entry for label, entry in streams.items()},
    )
    path = Path(ipc_dir) / "daq.json"
    path.write_text(json.dumps(document))
    return Setup(path, load_config(path), ipc_dir, addresses)


def remove_setup(setup: Setup) -> None:
    """Remove the config file and the ipc directory."""
    shutil.rmtree(setup.ipc_dir, ignore_errors=True)


class Producer:
    """The single writer of a ring: writes an image, then publishes its metadata."""

    def __init__(self, setup: Setup, suffix: str = "image", *, compressed: bool = False) -> None:
        config = setup.config
        self.height = config.image_pixel_height
        self.width = config.image_pixel_width
        self.compressed = compressed
        self.ring = ImageRing.create(shm_name(config.detector_name, suffix), ring_geometry(config))
        try:
            self.publisher = MetadataPublisher.for_config(config, suffix)
        except Exception:
            self.ring.close()
            raise

    def publish(self, image_id: int) -> bool:
        """Write image `image_id` into its slot and publish its metadata; False if not published."""
        pixels = expected_image(image_id, self.height, self.width)
        if self.compressed:
            data = bitshuffle_lz4_compress(pixels)
            compression = Compression.H5BITSHUFFLE_LZ4
        else:
            data = pixels.tobytes()
            compression = Compression.NONE
        self.ring.write(image_id, data)
        meta = ImageMeta(image_id, self.height, self.width, len(data), Dtype.UINT16, compression=compression)
        return self.publisher.publish(meta)

    def close(self) -> None:
        """Close the publisher (removes its socket file) and the ring (unlinks it)."""
        self.publisher.close()
        self.ring.close()


class LiveStreamProcess:
    """`python -m stddaq_live_stream CONFIG ADDRESS ...` as a child process (not waited for:
    `wait_ready()` does that, or `wait_exit()` for one that must refuse to start)."""

    def __init__(self, setup: Setup, address: str, *extra: str) -> None:
        stderr_path = Path(setup.ipc_dir) / f"live-stream-{next(_names)}.err"
        self.child = ChildProcess(
            [sys.executable, "-m", "stddaq_live_stream", str(setup.config_path), address, *extra],
            name="live stream",
            stderr=stderr_path,
        ).start()
        assert self.child.pid is not None
        self.pid: int = self.child.pid
        self.process = self.child.popen

    def wait_ready(self) -> str:
        """The READY line; AssertionError (with stderr) if the process exits or never gets ready."""
        if not self.child.wait_ready(DEADLINE_S) or self.child.ready_line is None:
            raise AssertionError(f"live stream not ready; stderr:\n{self.stderr()}")
        return self.child.ready_line

    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self.child.stderr_text()

    def wait_exit(self) -> int:
        """The exit status (killed by PID after the deadline)."""
        try:
            return self.child.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.child.stop(0, signal.SIGKILL)
            raise AssertionError(f"live stream did not exit; stderr:\n{self.stderr()}") from None

    def terminate(self) -> int:
        """SIGTERM, then the exit status."""
        self.child.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def rss_anon_kib(self) -> int:
        """Anonymous resident memory of the process (the ring's shared pages excluded)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        raise AssertionError("no RssAnon in /proc/PID/status")

    def final_stats(self) -> dict[str, str]:
        """Fields of the last stats line (line protocol) the process logged."""
        return stats_fields(self.stderr(), "live_stream")

    def close(self) -> None:
        """Make sure the process is gone (SIGKILL by PID)."""
        self.child.stop(0, signal.SIGKILL)


def stat_int(stats: dict[str, str], name: str) -> int:
    """An integer field of a line-protocol stats line (`12i`)."""
    return int(stats[name].rstrip("i"))


class Viewer:
    """A SUB socket on a live stream that reads multipart messages."""

    def __init__(self, address: str, *, rcvhwm: int = 1000, rcvbuf: int | None = None) -> None:
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        if rcvbuf is not None:
            self.socket.setsockopt(zmq.RCVBUF, rcvbuf)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(address)

    def receive(self, timeout_ms: int) -> list[bytes] | None:
        """The next message's parts, or None if none arrived in time."""
        if not self.socket.poll(timeout_ms):
            return None
        return self.socket.recv_multipart(zmq.NOBLOCK)

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)


def array10_frame(parts: list[bytes]) -> int:
    """The `frame` (image id) of an array-1.0 message."""
    frame: int = json.loads(parts[0])["frame"]
    return frame


def warm_up(producer: Producer, receive_one: Any, warmup_ids: Iterator[int]) -> None:
    """Publish warm-up images until `receive_one(timeout_ms)` returns something.

    Connections are asynchronous (the live stream's metadata subscription, the viewer's
    subscription): only a delivered image proves the whole path is up.
    """
    def delivered() -> bool:
        producer.publish(next(warmup_ids))
        return receive_one(100) is not None

    wait_until("a warm-up image reaching the viewer", delivered, DEADLINE_S, every=0)


@contextlib.contextmanager
def running(setup: Setup, address: str, *extra: str) -> Iterator[LiveStreamProcess]:
    """A ready live stream process, always stopped (SIGTERM, else SIGKILL by PID) afterwards."""
    stream = LiveStreamProcess(setup, address, *extra)
    try:
        stream.wait_ready()
        yield stream
    finally:
        stream.close()
