"""The parts of each message the fake camera sends (BSREAD or array-1.0), with fault modes.

Frames come from a FramePattern (zero-copy views). Compressed values are compressed once
per distinct frame and kept (up to a memory budget), so sending costs no compression.
The wire formats themselves are stddaq_common's encoders.

Per frame the camera formats only what changes: the main header (a template where the
pulse id and the timestamp go) and the 16-byte timestamp; the data header is the encoder's
cached bytes and the value is a pinned window of memory that never changes (the pattern,
or a cached compressed value), sent by libzmq without a copy (`wire_parts`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Literal

import numpy as np

from stddaq_common.bus.pinned_send import PinnedBuffer, pin
from stddaq_common.wire.array10 import Array10HeaderTemplate, encode_array10
from stddaq_common.wire.bsread import BsreadEncoder, ChannelSpec, bsread_type_of
from stddaq_common.wire.byte_views import BufferLike
from stddaq_common.wire.compression import bitshuffle_lz4_compress, lz4_compress
from stddaq_fake_camera.frames import FramePattern
from stddaq_fake_camera.schedule import SendKind

CameraFormat = Literal["bsread", "array-1.0"]
Compression = Literal["none", "bitshuffle_lz4", "lz4"]
COMPRESSIONS: tuple[Compression, ...] = ("none", "bitshuffle_lz4", "lz4")

DEFAULT_CACHE_BYTES = 1 << 30
"""Memory the compressed-frame cache may use (1 GiB)."""

_TIMESTAMP = {"<": struct.Struct("<qq"), ">": struct.Struct(">qq")}
"""BSREAD's 16-byte channel timestamp (int64 sec, int64 ns in the channel's byte order)."""


class CompressedFrames:
    """Compressed values of a FramePattern's frames, compressed on first use and cached."""

    def __init__(self, pattern: FramePattern, compression: Compression, budget_bytes: int) -> None:
        self.pattern = pattern
        self.compression = compression
        self.budget_bytes = budget_bytes
        self.cached_bytes = 0
        self._cache: dict[int, PinnedBuffer] = {}

    def value(self, pulse_id: int) -> PinnedBuffer | bytes:
        """The compressed value of frame `pulse_id`: pinned if it is kept (kept values
        never change nor go away), else new bytes."""
        key = pulse_id % self.pattern.period
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        value = self._compress(self.pattern.frame(pulse_id))
        if self.cached_bytes + len(value) > self.budget_bytes:
            return value
        pinned = pin(value)
        self._cache[key] = pinned
        self.cached_bytes += len(value)
        return pinned

    def prebuild(self, pulse_ids: Sequence[int]) -> None:
        """Compress these frames now (before sending starts), within the budget."""
        for pulse_id in pulse_ids:
            if self.cached_bytes >= self.budget_bytes:
                return
            self.value(pulse_id)

    def _compress(self, frame: np.ndarray) -> bytes:
        if self.compression == "bitshuffle_lz4":
            return bitshuffle_lz4_compress(frame)
        return lz4_compress(frame)


def _garbage(pulse_id: int, input_format: CameraFormat) -> list[BufferLike]:
    """A malformed message; which kind of malformed cycles with the pulse id."""
    variant = pulse_id % 3
    if input_format == "array-1.0":
        if variant == 0:
            return [b"\x89 not json at all", b"\x00" * 16]
        if variant == 1:
            header = json.dumps({"htype": "array-1.0", "shape": [4, 4], "type": "uint16", "frame": pulse_id})
            return [header.encode(), b"\x00" * 5]  # 5 bytes for a 32-byte image
        return [b"one part only"]
    if variant == 0:
        return [b"\x89 not json at all", b"{}", b"", b""]
    if variant == 1:
        main = json.dumps({"htype": "bsr_m-1.1", "pulse_id": "not a number", "hash": "x",
                           "global_timestamp": {"sec": 0, "ns": 0}})
        return [main.encode(), b"{}", b"", b""]
    return [b"one part only"]


WirePart = bytes | PinnedBuffer | BufferLike
"""A part as the camera sends it: bytes (copied, small), pinned (constant message) or a
buffer pyzmq sends zero-copy."""


class MessageMaker:
    """Builds the parts of each send for one camera setting."""

    def __init__(
        self,
        pattern: FramePattern,
        *,
        input_format: CameraFormat = "bsread",
        channel: str = "pco:FPICTURE",
        compression: Compression = "none",
        with_type_and_shape: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if input_format == "array-1.0" and compression != "none":
            raise ValueError("array-1.0 carries raw pixels only: use --compression none")
        self.pattern = pattern
        self.input_format = input_format
        height, width = pattern.shape
        self.wrong_pattern = FramePattern((height + 1, width), pattern.dtype, pattern.period)
        self.compressed = (
            CompressedFrames(pattern, compression, cache_bytes) if compression != "none" else None
        )
        dtype = pattern.dtype
        encoding = "big" if dtype.byteorder == ">" else "little"
        self._timestamp = _TIMESTAMP[">" if encoding == "big" else "<"]
        bsread_type = bsread_type_of(dtype)
        self._encoder = BsreadEncoder(
            [ChannelSpec.for_image(channel, height, width, bsread_type, encoding=encoding,
                                   compression=compression)],
            with_type_and_shape=with_type_and_shape,
        )
        self._wrong_encoder = BsreadEncoder(
            [ChannelSpec.for_image(channel, height + 1, width, bsread_type, encoding=encoding,
                                   compression=compression)],
            with_type_and_shape=with_type_and_shape,
        )
        self._pixels = pin(pattern.buffer)
        self._frame_bytes = pattern.nbytes
        self._array10 = Array10HeaderTemplate(pattern.shape, dtype)

    def wire_parts(self, pulse_id: int, kind: SendKind, timestamp: tuple[int, int]) -> list[WirePart]:
        """The parts of one send as the camera sends them (the value pinned where it can be)."""
        if kind is SendKind.FRAME:
            if self.input_format == "array-1.0":
                return [self._array10.header(pulse_id), self._pixel_part(pulse_id)]
            if not 0 <= pulse_id < 2**64:
                raise ValueError(f"pulse_id {pulse_id} is not a uint64")
            value = self._pixel_part(pulse_id) if self.compressed is None else self.compressed.value(pulse_id)
            return [
                self._encoder.main_header(pulse_id, timestamp),
                self._encoder.data_header,
                value,
                self._timestamp.pack(*timestamp),
            ]
        return self.parts(pulse_id, kind, timestamp)

    def _pixel_part(self, pulse_id: int) -> PinnedBuffer:
        return self._pixels.part(self.pattern.frame_offset(pulse_id), self._frame_bytes)

    def parts(self, pulse_id: int, kind: SendKind, timestamp: tuple[int, int]) -> list[BufferLike]:
        """The message parts of one send."""
        if kind is SendKind.GARBAGE:
            return _garbage(pulse_id, self.input_format)
        if kind is SendKind.RESTART:
            raise ValueError("a restart is not a message")
        if kind is SendKind.WRONG_SHAPE:
            frame = self.wrong_pattern.frame(pulse_id)
            if self.input_format == "array-1.0":
                return list(encode_array10(frame, pulse_id))
            return list(self._wrong_encoder.encode(pulse_id, timestamp, [frame]))
        return [part.view if isinstance(part, PinnedBuffer) else part
                for part in self.wire_parts(pulse_id, kind, timestamp)]
