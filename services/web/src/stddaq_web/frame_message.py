"""The binary WebSocket message of one frame (bytes only, no sockets).

Layout: 4-byte little-endian length N of the header, N bytes of UTF-8 JSON header, then
the 8-bit pixels row by row (`size` = [rows, columns] in the header). app.js decodes it.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

_LENGTH = struct.Struct("<I")


def encode_frame(header: dict[str, Any], pixels: npt.NDArray[np.uint8]) -> bytes:
    """Header length, JSON header, pixels: one WebSocket binary message."""
    text = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((_LENGTH.pack(len(text)), text, pixels.tobytes()))


def decode_frame(message: bytes) -> tuple[dict[str, Any], npt.NDArray[np.uint8]]:
    """The inverse of encode_frame (for tests and tools); ValueError if malformed."""
    if len(message) < _LENGTH.size:
        raise ValueError(f"frame message of {len(message)} bytes is too short")
    (length,) = _LENGTH.unpack_from(message)
    end = _LENGTH.size + length
    if end > len(message):
        raise ValueError(f"frame header of {length} bytes runs past the message ({len(message)} bytes)")
    header: dict[str, Any] = json.loads(message[_LENGTH.size : end])
    rows, columns = header["size"]
    pixels = np.frombuffer(message, np.uint8, offset=end)
    if pixels.size != rows * columns:
        raise ValueError(f"frame has {pixels.size} pixels, header says {rows} x {columns}")
    return header, pixels.reshape(rows, columns)
