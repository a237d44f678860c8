"""array-1.0 messages (docs/interfaces.md, section 6): a JSON header part, then raw pixels.

Header: `htype` "array-1.0", `shape` [H, W] (slowest first), `type`, `frame` (the image
id), optional `source`, `encoding`, `endianness` ("big" means big-endian pixels; the
default is little). The encoder writes the header bytes exactly as std_daq's live stream
does: `{"htype":"array-1.0", "shape":[2016,2016], "type":"uint16", "frame":3}`. The
decoder accepts any valid JSON carrying these fields; every malformed input raises
WireFormatError. No sockets here: parts are any buffers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from stddaq_common.wire.byte_views import BufferLike, byte_view
from stddaq_common.wire.errors import HEADER, JSON, PARTS, SIZE, WireFormatError

ARRAY10_HTYPE: Final = "array-1.0"
ARRAY10_TYPES: Final = (
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
)
"""Pixel types an array-1.0 header may name."""
RAW_ENCODINGS: Final = (None, "", "raw", "none")
"""`encoding` values that mean uncompressed pixels (ADZMQ sends "" for uncompressed)."""
MAX_HEADER_BYTES: Final = 1024 * 1024
MAX_DIMENSIONS: Final = 8
_FRAME_LIMIT: Final = 2**64


@dataclass(frozen=True, slots=True)
class Array10Header:
    """A decoded array-1.0 header."""

    frame: int
    shape: tuple[int, ...]
    type: str
    endianness: str = "little"
    source: str | None = None
    encoding: str | None = None

    @property
    def dtype(self) -> np.dtype[np.generic]:
        """The pixels' numpy dtype in their byte order (">u2" for big-endian uint16)."""
        return np.dtype(self.type).newbyteorder(">" if self.endianness == "big" else "<")

    @property
    def nbytes(self) -> int:
        """Bytes of the data part: shape x type size."""
        return math.prod(self.shape) * np.dtype(self.type).itemsize

    def array(self, data: BufferLike) -> npt.NDArray[np.generic]:
        """The data part as a zero-copy array of `shape` (big-endian dtype if the header says so)."""
        return np.frombuffer(byte_view(data, "array-1.0 data"), self.dtype).reshape(self.shape)


def _type_name(dtype: npt.DTypeLike) -> str:
    name = np.dtype(dtype).name
    if name not in ARRAY10_TYPES:
        raise ValueError(f"array-1.0 has no type for numpy dtype {np.dtype(dtype)}")
    return name


class Array10HeaderTemplate:
    """The header bytes of one shape and pixel type, for any frame id: only the id changes,
    so a stream of same-shaped images formats one integer per image."""

    def __init__(self, shape: Sequence[int], dtype: npt.DTypeLike) -> None:
        dimensions = ",".join(str(int(size)) for size in shape)
        name = _type_name(dtype)
        element = np.dtype(dtype)
        big = element.byteorder == ">" or (element.byteorder == "=" and np.little_endian is False)
        tail = ', "endianness":"big"' if big and element.itemsize > 1 else ""
        self.shape = tuple(int(size) for size in shape)
        self.dtype = element
        self._template = (
            f'{{"htype":"{ARRAY10_HTYPE}", "shape":[{dimensions}], "type":"{name}", "frame":%d{tail}}}'
        ).encode()

    def header(self, frame: int) -> bytes:
        """The header of image `frame`."""
        return self._template % int(frame)


def encode_array10_header(shape: Sequence[int], dtype: npt.DTypeLike, frame: int) -> bytes:
    """The header bytes exactly as std_daq writes them (plus `"endianness":"big"` if so)."""
    return Array10HeaderTemplate(shape, dtype).header(frame)


def encode_array10(image: npt.NDArray[np.generic], frame: int) -> list[bytes | memoryview]:
    """[header, pixels] for one image; the pixels are a zero-copy view if `image` is contiguous."""
    data = np.ascontiguousarray(image)
    return [encode_array10_header(data.shape, data.dtype, frame), byte_view(data)]


def _field_error(name: str, value: object, wanted: str) -> WireFormatError:
    return WireFormatError(f"array-1.0 header {name} is {value!r:.60}, {wanted}", HEADER)


def _optional_text(header: dict[str, object], name: str) -> str | None:
    value = header.get(name)
    if value is not None and not isinstance(value, str):
        raise _field_error(name, value, "not a string")
    return value


def decode_array10_header(part: BufferLike) -> Array10Header:
    """Parse an array-1.0 header part; WireFormatError if it is not a valid one."""
    view = byte_view(part, "array-1.0 header")
    if len(view) > MAX_HEADER_BYTES:
        raise WireFormatError(f"array-1.0 header has {len(view)} bytes, too many", SIZE)
    try:
        header = json.loads(view.tobytes())
    except (ValueError, RecursionError) as error:
        raise WireFormatError(f"array-1.0 header is not valid JSON: {error}", JSON) from None
    if not isinstance(header, dict):
        raise WireFormatError(f"array-1.0 header is a JSON {type(header).__name__}, not an object", JSON)
    htype = header.get("htype")
    if htype != ARRAY10_HTYPE and htype != [ARRAY10_HTYPE]:
        raise _field_error("htype", htype, f"expected {ARRAY10_HTYPE!r}")
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_DIMENSIONS
        or not all(type(size) is int and size >= 0 for size in shape)
    ):
        raise _field_error("shape", shape, f"not a list of 1 to {MAX_DIMENSIONS} sizes")
    type_name = header.get("type")
    if not isinstance(type_name, str) or type_name.lower() not in ARRAY10_TYPES:
        raise _field_error("type", type_name, f"not one of {', '.join(ARRAY10_TYPES)}")
    frame = header.get("frame")
    if type(frame) is not int or not 0 <= frame < _FRAME_LIMIT:
        raise _field_error("frame", frame, "not a non-negative integer")
    endianness = _optional_text(header, "endianness") or "little"
    if endianness not in ("little", "big"):
        raise _field_error("endianness", endianness, 'not "little" or "big"')
    encoding = _optional_text(header, "encoding")
    if encoding not in RAW_ENCODINGS:
        raise _field_error("encoding", encoding, "not supported (only raw pixels)")
    return Array10Header(
        frame=frame,
        shape=tuple(shape),
        type=type_name.lower(),
        endianness=endianness,
        source=_optional_text(header, "source"),
        encoding=encoding,
    )


def decode_array10(parts: Sequence[BufferLike]) -> tuple[Array10Header, memoryview]:
    """(header, data view) of a two-part array-1.0 message; the data size is checked."""
    if len(parts) != 2:
        raise WireFormatError(f"array-1.0 message has {len(parts)} part(s), expected 2", PARTS)
    header = decode_array10_header(parts[0])
    data = byte_view(parts[1], "array-1.0 data")
    if len(data) != header.nbytes:
        raise WireFormatError(
            f"array-1.0 data has {len(data)} bytes, but {header.type} x {list(header.shape)} "
            f"needs {header.nbytes}",
            SIZE,
        )
    return header, data
