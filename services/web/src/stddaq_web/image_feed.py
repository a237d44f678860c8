"""The web service's live-stream subscription: a SUB socket that keeps only the newest image.

A viewer like any other: it connects to the live stream's array-1.0 PUB address with a
small receive high-water mark, so when it falls behind ZeroMQ drops images for it (never
for the acquisition), and of what is queued it decodes only the newest. ZeroMQ reconnects
by itself when the live stream restarts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import zmq

from stddaq_common.runtime.stats import Stats
from stddaq_common.wire.array10 import decode_array10
from stddaq_common.wire.errors import WireFormatError

log = logging.getLogger("stddaq.web.feed")

RECEIVE_HWM = 4
"""Images queued for the web service before ZeroMQ drops newer ones for it."""


@dataclass(frozen=True, slots=True)
class LatestImage:
    """The newest image: its id, pixels (rows x columns) and when it arrived (Unix time)."""

    image_id: int
    pixels: npt.NDArray[Any]
    received_at: float
    sequence: int
    """Counts images taken in by this feed (1, 2, ...): tells a new image from the same."""


def connect_address(address: str) -> str:
    """The address to connect to for a bind address (tcp://*:P and 0.0.0.0 -> 127.0.0.1)."""
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if host in ("*", "0.0.0.0", ""):
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


class ImageFeed:
    """Subscribes to one array-1.0 stream in a background thread; `latest` is the newest."""

    def __init__(self, address: str, stats: Stats) -> None:
        self.address = address
        self.latest: LatestImage | None = None
        self._received = stats.counter("images_received", "live-stream images taken in")
        self._dropped = stats.counter(
            "images_skipped", "live-stream images replaced by a newer one before being decoded"
        )
        self._bad = stats.counter("images_bad", "live-stream messages that were not valid array-1.0")
        self._stop = threading.Event()
        self._context = zmq.Context()
        self._socket: zmq.Socket[bytes] = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        self._socket.setsockopt(zmq.RECONNECT_IVL, 200)
        self._socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(connect_address(address))
        self._thread = threading.Thread(target=self._run, name="web-feed", daemon=True)
        self._sequence = 0
        self.last_error: str | None = None

    @property
    def received(self) -> int:
        """Images taken in so far."""
        return int(self._received.value)

    def start(self) -> None:
        """Start receiving."""
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(200):
                continue
            newest: list[bytes] | None = None
            while True:
                try:
                    parts = self._socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if newest is not None:
                    self._dropped.inc()
                newest = parts
            if newest is not None:
                self._take(newest)

    def _take(self, parts: list[bytes]) -> None:
        try:
            header, data = decode_array10(parts)
            pixels = header.array(data)
            if pixels.ndim != 2:
                raise WireFormatError(f"array-1.0 image has {pixels.ndim} dimensions, not 2", "shape")
        except WireFormatError as error:
            self._bad.inc()
            self.last_error = str(error)
            log.warning("live stream %s: %s", self.address, error)
            return
        if pixels.dtype.byteorder == ">":
            pixels = pixels.astype(pixels.dtype.newbyteorder("<"))
        self._sequence += 1
        self._received.inc()
        self.latest = LatestImage(int(header.frame), np.asarray(pixels), time.time(), self._sequence)

    def close(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._socket.close(0)
        self._context.term()
