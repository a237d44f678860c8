"""Taking one image out of its ring slot for sending, never a torn one.

ZeroMQ sends a zero-copy buffer later, from its I/O thread; had we handed it the slot
itself, a slot the writer overwrites before then would go out torn and nothing could call
it back. So every image is copied once, and the slot is checked with `still_valid()` after
the copy and before anything is sent: a copy the writer raced with is discarded.

Where the copy goes (measured in services/live_stream/README.md):
- Large images go into a small pool of reusable, pre-faulted send buffers that ZeroMQ
  sends zero-copy; a buffer is reused once ZeroMQ's MessageTracker says it is done with it.
  The pool is also the back-pressure signal ZeroMQ's PUB socket does not give: when every
  buffer is still queued, the viewers' queues are full, so the image is not copied at all
  (`NO_BUFFER`, counted as dropped for slow viewers). A slow viewer thus costs the stream
  copies at the viewer's pace, not at the acquisition's, and memory stays at the pool.
- With a pool of 0 buffers, every image is copied into a new ZeroMQ message (no
  back-pressure: images the viewers' queues cannot take are copied, then dropped).
- Small images (below `SMALL_IMAGE_BYTES`) are always copied into a new ZeroMQ message:
  cheaper than tracking a zero-copy buffer.

Compressed slots needed as raw pixels: the compressed bytes (small) are copied out first
and decompressed from that private copy, straight into a send buffer; the decoder trusts
the block lengths it reads, so it must never read memory the writer may change meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt
import zmq

from stddaq_common.ring.image_ring import SlotView
from stddaq_common.wire.compression import bitshuffle_lz4_decompress_into

SMALL_IMAGE_BYTES = 64 * 1024
"""Images smaller than this are copied into a new ZeroMQ message rather than a pool buffer."""


class NotCopied(Enum):
    """Why copy_out returned no Frame."""

    TORN = "torn"
    """The writer overwrote the slot during the copy: discarded."""
    NO_BUFFER = "no_buffer"
    """Every send buffer is still queued for viewers: not copied."""


@dataclass(slots=True)
class _SendBuffer:
    array: npt.NDArray[np.uint8]
    tracker: zmq.MessageTracker | None = None

    @property
    def free(self) -> bool:
        return self.tracker is None or self.tracker.done


class SendBufferPool:
    """Up to `max_buffers` pre-faulted buffers of `buffer_bytes`, created as they are needed."""

    def __init__(self, buffer_bytes: int, max_buffers: int) -> None:
        self.buffer_bytes = buffer_bytes
        self.max_buffers = max_buffers
        self._buffers: list[_SendBuffer] = []
        self._next = 0

    @property
    def size(self) -> int:
        """Buffers created so far."""
        return len(self._buffers)

    def take(self) -> _SendBuffer | None:
        """A buffer ZeroMQ no longer uses (a new one if none is free and the pool may grow)."""
        buffers = self._buffers
        count = len(buffers)
        for step in range(count):  # round robin: the oldest send is the likeliest to be done
            index = (self._next + step) % count
            buffer = buffers[index]
            if buffer.free:
                self._next = index + 1
                return buffer
        if count < self.max_buffers:
            array = np.zeros(self.buffer_bytes, np.uint8)  # written now: faulted in once, here
            buffer = _SendBuffer(array)
            buffers.append(buffer)
            self._next = count + 1
            return buffer
        return None

    @staticmethod
    def send_frame(buffer: _SendBuffer, nbytes: int) -> zmq.Frame:
        """A zero-copy Frame of the buffer's first `nbytes`; the buffer is busy until sent."""
        frame = zmq.Frame(buffer.array[:nbytes], copy=False, track=True)
        buffer.tracker = frame.tracker
        return frame


class ImageCopier:
    """Copies images out of ring slots into Frames ready to send (or says why not)."""

    def __init__(self, slot_bytes: int, max_buffers: int) -> None:
        self.pool = SendBufferPool(slot_bytes, max_buffers)
        self._compressed = bytearray(slot_bytes)

    def _buffer_for(self, nbytes: int) -> _SendBuffer | NotCopied | None:
        """A pool buffer for a large image, NO_BUFFER if all are queued, None: use a new message."""
        if nbytes < SMALL_IMAGE_BYTES or self.pool.max_buffers == 0 or nbytes > self.pool.buffer_bytes:
            return None
        buffer = self.pool.take()
        return NotCopied.NO_BUFFER if buffer is None else buffer

    def copy_out(self, view: SlotView) -> zmq.Frame | NotCopied:
        """The slot's bytes as a Frame, or why not (TORN: overwritten during the copy)."""
        nbytes = view.nbytes
        buffer = self._buffer_for(nbytes)
        if isinstance(buffer, NotCopied):
            return buffer
        if buffer is None:
            frame = zmq.Frame(view.data, copy=True)
            return frame if view.still_valid() else NotCopied.TORN
        buffer.array.data[:nbytes] = view.data
        if not view.still_valid():
            return NotCopied.TORN  # the buffer was not handed to ZeroMQ: it stays free
        return self.pool.send_frame(buffer, nbytes)

    def decompress_out(
        self, view: SlotView, dtype: np.dtype[np.generic], raw_nbytes: int
    ) -> zmq.Frame | NotCopied:
        """The decompressed image of a bitshuffle-LZ4 slot as a Frame, or why not.

        Raises WireFormatError (with the reason) if the slot does not hold a valid
        bitshuffle-LZ4 chunk of `raw_nbytes` bytes.
        """
        buffer = self._buffer_for(raw_nbytes)
        if isinstance(buffer, NotCopied):
            return buffer
        nbytes = view.nbytes
        compressed = memoryview(self._compressed)[:nbytes]
        compressed[:] = view.data
        if not view.still_valid():
            return NotCopied.TORN
        if buffer is not None:
            bitshuffle_lz4_decompress_into(compressed, buffer.array, dtype, expected_nbytes=raw_nbytes)
            return self.pool.send_frame(buffer, raw_nbytes)
        raw = np.empty(raw_nbytes, np.uint8)
        bitshuffle_lz4_decompress_into(compressed, raw, dtype, expected_nbytes=raw_nbytes)
        return zmq.Frame(raw, copy=raw_nbytes < SMALL_IMAGE_BYTES)
