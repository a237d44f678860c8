"""ctypes bindings to the C functions the `bitshuffle` extension module exports.

Why: `bitshuffle.decompress_lz4` always returns a new array, so decoding into a ring slot
through it costs an extra allocation and a copy; `lz4.block.decompress` returns new bytes.
The `bitshuffle` wheel's extension (`bitshuffle/ext.*.so`) exports `bshuf_decompress_lz4`,
`bshuf_compress_lz4` and the bundled LZ4 block functions (`LZ4_decompress_safe`, ...), so
we call them directly with the destination's address: the bytes land in the slot in one
pass. ctypes releases the GIL for the duration of each call.

The wheel is built with OpenMP; on these 2-core machines its parallel block loop made one
2 MiB decompression 3-4x slower than a single thread (measured 4.5-6 ms vs 1.2-1.3 ms), so
every thread that calls into it is set to one OpenMP thread first. Parallelism comes from
running several decoders (threads or processes) instead.

`AVAILABLE` is False if the symbols are missing (a differently built bitshuffle); the
compression module then falls back to the Python APIs plus one copy.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

_library: ctypes.CDLL | None
try:
    import bitshuffle.ext as _bitshuffle_ext

    _library = ctypes.CDLL(_bitshuffle_ext.__file__)
    _p, _n, _i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
    for _name, _result, _arguments in (
        ("bshuf_decompress_lz4", ctypes.c_int64, [_p, _p, _n, _n, _n]),
        ("bshuf_compress_lz4", ctypes.c_int64, [_p, _p, _n, _n, _n]),
        ("bshuf_compress_lz4_bound", _n, [_n, _n, _n]),
        ("LZ4_decompress_safe", _i, [_p, _p, _i, _i]),
        ("LZ4_compress_default", _i, [_p, _p, _i, _i]),
        ("LZ4_compressBound", _i, [_i]),
    ):
        _function = getattr(_library, _name)
        _function.restype = _result
        _function.argtypes = _arguments
except (ImportError, OSError, AttributeError):
    _library = None

AVAILABLE = _library is not None
"""True when the C functions are callable directly."""

_omp_set_num_threads: Any = getattr(_library, "omp_set_num_threads", None)
_thread_state = threading.local()


def _one_openmp_thread() -> None:
    """Make bitshuffle's OpenMP loops single-threaded in the calling thread (once)."""
    if _omp_set_num_threads is not None and not getattr(_thread_state, "done", False):
        _omp_set_num_threads(1)
        _thread_state.done = True


def _lib() -> ctypes.CDLL:
    if _library is None:
        raise RuntimeError("bitshuffle's C functions are not available")
    return _library


def bshuf_decompress_lz4(
    source: int, destination: int, n_elements: int, elem_size: int, block_elements: int
) -> int:
    """Bytes of `source` consumed, or a negative bitshuffle error code.

    The caller must have checked that every block header stays inside the source buffer:
    the C function does not know the source length.
    """
    _one_openmp_thread()
    result: int = _lib().bshuf_decompress_lz4(
        source,
        destination,
        n_elements,
        elem_size,
        block_elements,
    )
    return result


def bshuf_compress_lz4(
    source: int, destination: int, n_elements: int, elem_size: int, block_elements: int
) -> int:
    """Bytes written to `destination` (which holds bshuf_compress_lz4_bound), or < 0."""
    _one_openmp_thread()
    result: int = _lib().bshuf_compress_lz4(
        source,
        destination,
        n_elements,
        elem_size,
        block_elements,
    )
    return result


def bshuf_compress_lz4_bound(n_elements: int, elem_size: int, block_elements: int) -> int:
    """The largest number of bytes bshuf_compress_lz4 can write (without our 12-byte header)."""
    result: int = _lib().bshuf_compress_lz4_bound(n_elements, elem_size, block_elements)
    return result


def lz4_decompress_safe(source: int, destination: int, source_size: int, capacity: int) -> int:
    """LZ4_decompress_safe: bytes written (never more than `capacity`), or < 0 on bad input."""
    result: int = _lib().LZ4_decompress_safe(source, destination, source_size, capacity)
    return result


def lz4_compress_default(source: int, destination: int, source_size: int, capacity: int) -> int:
    """LZ4_compress_default: compressed bytes written, 0 if `capacity` is too small."""
    result: int = _lib().LZ4_compress_default(source, destination, source_size, capacity)
    return result


def lz4_compress_bound(source_size: int) -> int:
    """LZ4_compressBound: the largest compressed size of `source_size` bytes."""
    result: int = _lib().LZ4_compressBound(source_size)
    return result
