"""Flat byte views of message parts and output buffers, without copying.

Codecs accept any buffer-like part: bytes, bytearray, memoryview, numpy arrays, or
objects that export the buffer protocol such as zmq.Frame. These helpers turn them into
1-D unsigned-byte memoryviews that share the original memory.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np

from stddaq_common.wire.errors import PARTS, WireFormatError

BufferLike: TypeAlias = object
"""Anything exporting the buffer protocol (bytes, memoryview, numpy array, zmq.Frame)."""


def _flat_bytes(view: memoryview) -> memoryview:
    """The same memory as a C-contiguous 1-D view of unsigned bytes (ValueError if not)."""
    if view.ndim == 1 and view.format == "B":
        return view
    try:
        return view.cast("B")
    except TypeError:
        # Non-native formats (">H", structured numpy dtypes) cannot be cast; numpy can
        # still view the same memory as bytes as long as it is contiguous.
        pass
    if not view.c_contiguous:
        raise ValueError("buffer is not C-contiguous")
    return np.frombuffer(view, dtype=np.uint8).data


def byte_view(part: BufferLike, what: str = "message part") -> memoryview:
    """A read-only-or-writable flat byte view of `part`; WireFormatError if it is no buffer."""
    if isinstance(part, bytes | bytearray):
        return memoryview(part)
    try:
        view = memoryview(part)  # type: ignore[arg-type]
    except TypeError:
        inner = getattr(part, "buffer", None)
        if inner is None:
            raise WireFormatError(f"{what} of type {type(part).__name__} is not a buffer", PARTS) from None
        try:
            view = memoryview(inner)
        except TypeError:
            raise WireFormatError(f"{what} of type {type(part).__name__} is not a buffer", PARTS) from None
    try:
        return _flat_bytes(view)
    except ValueError as error:
        raise WireFormatError(f"{what}: {error}", PARTS) from None


def writable_byte_view(out: BufferLike) -> memoryview:
    """A flat writable byte view of an output buffer (TypeError if it is read-only)."""
    try:
        view = memoryview(out)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"output of type {type(out).__name__} is not a buffer") from None
    if view.readonly:
        raise TypeError("output buffer is read-only")
    try:
        return _flat_bytes(view)
    except ValueError:
        raise TypeError("output buffer is not C-contiguous") from None


def address_of(view: memoryview) -> int:
    """The memory address of a flat byte view (for handing to C code while `view` lives)."""
    array = np.frombuffer(view, dtype=np.uint8)
    address: int = array.__array_interface__["data"][0]
    return address
