"""bitshuffle+LZ4 and LZ4 values as BSREAD and HDF5 carry them, decoded into given buffers.

Formats (docs/interfaces.md, section 5):
- bitshuffle_lz4: 8-byte big-endian uncompressed length in bytes, 4-byte big-endian block
  size in bytes, then the bitshuffle+LZ4 blocks (each a 4-byte big-endian compressed
  length and an LZ4 block), then the last `n_elements % 8` elements uncompressed. These
  are exactly the bytes of an HDF5 bitshuffle-filter (id 32008, LZ4) chunk.
- lz4: 4-byte little-endian uncompressed length, then one LZ4 block.

Decoders write straight into the caller's buffer (a ring slot) through the C functions of
the `bitshuffle` wheel (see _bshuf_native for why and how); every malformed input raises
WireFormatError. Before bitshuffle's C decoder runs, the block chain is walked and checked
to stay inside the input, because that decoder trusts the block lengths it reads.
"""

from __future__ import annotations

import struct
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from stddaq_common.wire import _bshuf_native as native
from stddaq_common.wire.byte_views import BufferLike, address_of, byte_view, writable_byte_view
from stddaq_common.wire.errors import COMPRESSION, SIZE, WireFormatError

CompressionName = Literal["none", "bitshuffle_lz4"]
"""How a file's images are compressed: the one list of these names (acquisition request,
driver-writer protocol, HDF5 layout)."""
FILE_COMPRESSIONS: Final[tuple[CompressionName, ...]] = ("none", "bitshuffle_lz4")

BITSHUFFLE_HEADER_BYTES: Final = 12
"""uint64 BE uncompressed bytes + uint32 BE block size in bytes."""
LZ4_HEADER_BYTES: Final = 4
"""uint32 LE uncompressed bytes."""
DEFAULT_MAX_DECOMPRESSED_BYTES: Final = 256 * 1024 * 1024
"""Largest value the allocating decoders accept (a lying length cannot allocate more)."""
LZ4_MAX_INPUT_BYTES: Final = 0x7E000000
"""LZ4's own limit on one block's uncompressed size."""

_BLOCKED_MULTIPLE: Final = 8
"""bitshuffle works on groups of 8 elements; the remainder is stored uncompressed."""
_TARGET_BLOCK_BYTES: Final = 8192
_MIN_BLOCK_ELEMENTS: Final = 128

_bitshuffle_header = struct.Struct(">QI")
_block_length = struct.Struct(">I")
_lz4_header = struct.Struct("<I")

# Tests switch this off to run the pure-Python-API fallback on the same inputs.
_use_native = native.AVAILABLE


def default_block_elements(itemsize: int) -> int:
    """bitshuffle's default block size in elements for an element size (as its C code)."""
    elements = (_TARGET_BLOCK_BYTES // itemsize) // _BLOCKED_MULTIPLE * _BLOCKED_MULTIPLE
    return max(elements, _MIN_BLOCK_ELEMENTS)


def _lz4_compress_bound(nbytes: int) -> int:
    """LZ4_compressBound: the worst-case size of one LZ4 block of `nbytes` input bytes."""
    return nbytes + nbytes // 255 + 16


def bitshuffle_lz4_max_size(n_elements: int, itemsize: int, block_elements: int = 0) -> int:
    """The largest bitshuffle_lz4 value (header included) `n_elements` can compress to."""
    block = block_elements or default_block_elements(itemsize)
    n_full, rest = divmod(n_elements, block)
    last = rest - rest % _BLOCKED_MULTIPLE
    size = n_full * (_lz4_compress_bound(block * itemsize) + 4)
    if last:
        size += _lz4_compress_bound(last * itemsize) + 4
    size += (n_elements % _BLOCKED_MULTIPLE) * itemsize
    return BITSHUFFLE_HEADER_BYTES + size


def lz4_max_size(nbytes: int) -> int:
    """The largest lz4 value (header included) `nbytes` can compress to."""
    return LZ4_HEADER_BYTES + _lz4_compress_bound(nbytes)


# --- bitshuffle_lz4 decoding ------------------------------------------------------------


def bitshuffle_lz4_header(raw: BufferLike) -> tuple[int, int]:
    """(uncompressed bytes, block size in bytes) of a bitshuffle_lz4 value."""
    view = byte_view(raw, "bitshuffle_lz4 value")
    return _read_bitshuffle_header(view)


def _read_bitshuffle_header(view: memoryview) -> tuple[int, int]:
    if len(view) < BITSHUFFLE_HEADER_BYTES:
        raise WireFormatError(
            f"bitshuffle_lz4 value has {len(view)} bytes, less than its 12-byte header",
            COMPRESSION,
        )
    nbytes, block_bytes = _bitshuffle_header.unpack_from(view)
    return int(nbytes), int(block_bytes)


def _block_elements_of(block_bytes: int, itemsize: int) -> int:
    """Block size in elements from the header's block size in bytes (0: the default)."""
    if block_bytes % itemsize:
        raise WireFormatError(
            f"bitshuffle_lz4 block size {block_bytes} bytes is not a multiple of the "
            f"{itemsize}-byte element size",
            COMPRESSION,
        )
    elements = block_bytes // itemsize or default_block_elements(itemsize)
    if elements % _BLOCKED_MULTIPLE:
        raise WireFormatError(
            f"bitshuffle_lz4 block size {elements} elements is not a multiple of 8",
            COMPRESSION,
        )
    return elements


def _check_block_chain(view: memoryview, n_elements: int, itemsize: int, block: int) -> None:
    """Raise unless the blocks' length fields tile the value exactly (no read past its end)."""
    n_full, rest = divmod(n_elements, block)
    n_blocks = n_full + (1 if rest >= _BLOCKED_MULTIPLE else 0)
    limit = len(view) - (n_elements % _BLOCKED_MULTIPLE) * itemsize
    offset = BITSHUFFLE_HEADER_BYTES
    unpack = _block_length.unpack_from
    for index in range(n_blocks):
        if offset + 4 > limit:
            raise WireFormatError(
                f"bitshuffle_lz4 value is truncated: block {index} of {n_blocks} starts at "
                f"byte {offset} of {len(view)}",
                COMPRESSION,
            )
        offset += 4 + unpack(view, offset)[0]
    if offset != limit:
        raise WireFormatError(
            f"bitshuffle_lz4 blocks end at byte {offset}, but the value has "
            f"{limit} bytes before its uncompressed tail (a length field lies)",
            COMPRESSION,
        )


def bitshuffle_lz4_decompress_into(
    raw: BufferLike,
    out: BufferLike,
    dtype: npt.DTypeLike,
    *,
    expected_nbytes: int | None = None,
) -> int:
    """Decompress a bitshuffle_lz4 value into the start of `out`; return the bytes written.

    `dtype` gives the element size the data was shuffled with. WireFormatError if the
    value is malformed, its length differs from `expected_nbytes`, or it does not fit `out`.
    """
    view = byte_view(raw, "bitshuffle_lz4 value")
    destination = writable_byte_view(out)
    itemsize = np.dtype(dtype).itemsize
    nbytes, block_bytes = _read_bitshuffle_header(view)
    if nbytes % itemsize:
        raise WireFormatError(
            f"bitshuffle_lz4 length {nbytes} bytes is not a multiple of the {itemsize}-byte element size",
            SIZE,
        )
    if expected_nbytes is not None and nbytes != expected_nbytes:
        raise WireFormatError(f"bitshuffle_lz4 value holds {nbytes} bytes, expected {expected_nbytes}", SIZE)
    if nbytes > len(destination):
        raise WireFormatError(
            f"bitshuffle_lz4 value holds {nbytes} bytes, more than the {len(destination)}-byte output buffer",
            SIZE,
        )
    n_elements = nbytes // itemsize
    block = _block_elements_of(block_bytes, itemsize)
    _check_block_chain(view, n_elements, itemsize, block)
    if n_elements == 0:
        return 0
    if _use_native:
        consumed = native.bshuf_decompress_lz4(
            address_of(view) + BITSHUFFLE_HEADER_BYTES,
            address_of(destination),
            n_elements,
            itemsize,
            block,
        )
    else:
        consumed = _python_bitshuffle_decompress(view, destination, n_elements, itemsize, block)
    if consumed != len(view) - BITSHUFFLE_HEADER_BYTES:
        raise WireFormatError(
            f"bitshuffle_lz4 value does not decompress (bitshuffle error {consumed})",
            COMPRESSION,
        )
    return nbytes


def _python_bitshuffle_decompress(
    view: memoryview, destination: memoryview, n_elements: int, itemsize: int, block: int
) -> int:
    """Fallback through bitshuffle's Python API: a new array, then one copy into place."""
    import bitshuffle

    source = np.frombuffer(view, dtype=np.uint8, offset=BITSHUFFLE_HEADER_BYTES)
    try:
        result = bitshuffle.decompress_lz4(source, (n_elements,), np.dtype(f"V{itemsize}"), block)
    except (RuntimeError, ValueError):
        return -1
    nbytes = n_elements * itemsize
    destination[:nbytes] = np.ascontiguousarray(result).view(np.uint8).data
    return len(view) - BITSHUFFLE_HEADER_BYTES


def bitshuffle_lz4_decompress(
    raw: BufferLike,
    dtype: npt.DTypeLike,
    *,
    max_nbytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> npt.NDArray[np.generic]:
    """Decompress a bitshuffle_lz4 value into a new 1-D array of `dtype`."""
    nbytes, _ = bitshuffle_lz4_header(raw)
    if nbytes > max_nbytes:
        raise WireFormatError(
            f"bitshuffle_lz4 value claims {nbytes} bytes, more than the allowed {max_nbytes}",
            SIZE,
        )
    element = np.dtype(dtype)
    result = np.empty(nbytes // element.itemsize, dtype=element)
    bitshuffle_lz4_decompress_into(raw, result, element, expected_nbytes=nbytes)
    return result


# --- lz4 decoding -----------------------------------------------------------------------


def lz4_uncompressed_size(raw: BufferLike) -> int:
    """The uncompressed length an lz4 value's header claims."""
    return _read_lz4_header(byte_view(raw, "lz4 value"))


def _read_lz4_header(view: memoryview) -> int:
    if len(view) <= LZ4_HEADER_BYTES:
        raise WireFormatError(
            f"lz4 value has {len(view)} bytes: no LZ4 block after its 4-byte header",
            COMPRESSION,
        )
    nbytes: int = _lz4_header.unpack_from(view)[0]
    return nbytes


def lz4_decompress_into(raw: BufferLike, out: BufferLike, *, expected_nbytes: int | None = None) -> int:
    """Decompress an lz4 value into the start of `out`; return the bytes written."""
    view = byte_view(raw, "lz4 value")
    destination = writable_byte_view(out)
    nbytes = _read_lz4_header(view)
    if expected_nbytes is not None and nbytes != expected_nbytes:
        raise WireFormatError(f"lz4 value holds {nbytes} bytes, expected {expected_nbytes}", SIZE)
    if nbytes > len(destination):
        raise WireFormatError(
            f"lz4 value holds {nbytes} bytes, more than the {len(destination)}-byte output buffer",
            SIZE,
        )
    if nbytes > LZ4_MAX_INPUT_BYTES or len(view) - LZ4_HEADER_BYTES > LZ4_MAX_INPUT_BYTES:
        raise WireFormatError(f"lz4 value of {nbytes} bytes exceeds LZ4's block limit", SIZE)
    if _use_native:
        written = native.lz4_decompress_safe(
            address_of(view) + LZ4_HEADER_BYTES,
            address_of(destination),
            len(view) - LZ4_HEADER_BYTES,
            nbytes,
        )
    else:
        written = _python_lz4_decompress(view, destination, nbytes)
    if written != nbytes:
        raise WireFormatError(
            f"lz4 block does not decompress to the {nbytes} bytes its header says (LZ4 returned {written})",
            COMPRESSION,
        )
    return nbytes


def _python_lz4_decompress(view: memoryview, destination: memoryview, nbytes: int) -> int:
    """Fallback through lz4.block: new bytes, then one copy into place."""
    import lz4.block

    try:
        data = lz4.block.decompress(view[LZ4_HEADER_BYTES:], uncompressed_size=nbytes)
    except lz4.block.LZ4BlockError:
        return -1
    destination[: len(data)] = data
    return len(data)


def lz4_decompress(raw: BufferLike, *, max_nbytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> bytearray:
    """Decompress an lz4 value into a new bytearray."""
    nbytes = lz4_uncompressed_size(raw)
    if nbytes > max_nbytes:
        raise WireFormatError(f"lz4 value claims {nbytes} bytes, more than the allowed {max_nbytes}", SIZE)
    result = bytearray(nbytes)
    lz4_decompress_into(raw, result, expected_nbytes=nbytes)
    return result


# --- compression (encoders, tests, processing stages) -----------------------------------


def bitshuffle_lz4_compress_into(
    array: npt.NDArray[np.generic], out: BufferLike, block_elements: int = 0
) -> int:
    """Compress `array` as a bitshuffle_lz4 value into `out`; return the bytes written.

    `out` must hold bitshuffle_lz4_max_size(array.size, array.itemsize) bytes.
    """
    data = np.ascontiguousarray(array)
    itemsize = data.itemsize
    block = block_elements or default_block_elements(itemsize)
    if block % _BLOCKED_MULTIPLE:
        raise ValueError(f"block size {block} elements is not a multiple of 8")
    destination = writable_byte_view(out)
    needed = bitshuffle_lz4_max_size(data.size, itemsize, block)
    if len(destination) < needed:
        raise ValueError(f"output holds {len(destination)} bytes, compression may need {needed}")
    _bitshuffle_header.pack_into(destination, 0, data.nbytes, block * itemsize)
    if data.size == 0:
        return BITSHUFFLE_HEADER_BYTES
    if _use_native:
        written = native.bshuf_compress_lz4(
            address_of(byte_view(data)),
            address_of(destination) + BITSHUFFLE_HEADER_BYTES,
            data.size,
            itemsize,
            block,
        )
        if written < 0:
            raise RuntimeError(f"bitshuffle compression failed with error {written}")
    else:
        import bitshuffle

        compressed = bitshuffle.compress_lz4(data.reshape(-1).view(f"V{itemsize}"), block)
        written = compressed.nbytes
        end = BITSHUFFLE_HEADER_BYTES + written
        destination[BITSHUFFLE_HEADER_BYTES:end] = memoryview(compressed)
    return BITSHUFFLE_HEADER_BYTES + written


def bitshuffle_lz4_compress_view(array: npt.NDArray[np.generic], block_elements: int = 0) -> memoryview:
    """Compress `array` as a bitshuffle_lz4 value into a new buffer (no further copy)."""
    buffer = np.empty(bitshuffle_lz4_max_size(array.size, array.itemsize, block_elements), np.uint8)
    written = bitshuffle_lz4_compress_into(array, buffer, block_elements)
    return buffer.data[:written]


def bitshuffle_lz4_compress(array: npt.NDArray[np.generic], block_elements: int = 0) -> bytes:
    """Compress `array` as a bitshuffle_lz4 value (12-byte header + blocks, filter 32008)."""
    return bytes(bitshuffle_lz4_compress_view(array, block_elements))


def lz4_compress_into(data: BufferLike, out: BufferLike) -> int:
    """Compress bytes as an lz4 value into `out` (lz4_max_size bytes); return bytes written."""
    source = byte_view(data, "data")
    destination = writable_byte_view(out)
    if len(source) > LZ4_MAX_INPUT_BYTES:
        raise ValueError(f"{len(source)} bytes exceed LZ4's block limit")
    needed = lz4_max_size(len(source))
    if len(destination) < needed:
        raise ValueError(f"output holds {len(destination)} bytes, compression may need {needed}")
    _lz4_header.pack_into(destination, 0, len(source))
    if _use_native:
        written = native.lz4_compress_default(
            address_of(source),
            address_of(destination) + LZ4_HEADER_BYTES,
            len(source),
            len(destination) - LZ4_HEADER_BYTES,
        )
        if written <= 0:
            raise RuntimeError("LZ4 compression failed")
    else:
        import lz4.block

        compressed = lz4.block.compress(source, store_size=False)
        written = len(compressed)
        destination[LZ4_HEADER_BYTES : LZ4_HEADER_BYTES + written] = compressed
    return LZ4_HEADER_BYTES + written


def lz4_compress_view(data: BufferLike) -> memoryview:
    """Compress bytes as an lz4 value into a new buffer (no further copy)."""
    source = byte_view(data, "data")
    buffer = np.empty(lz4_max_size(len(source)), np.uint8)
    written = lz4_compress_into(source, buffer)
    return buffer.data[:written]


def lz4_compress(data: BufferLike) -> bytes:
    """Compress bytes as an lz4 value (4-byte LE length + one LZ4 block)."""
    return bytes(lz4_compress_view(data))
