"""Writing whole image chunks with O_DIRECT, past the page cache.

Why: a buffered `write()` copies every image into fresh page-cache pages and the kernel
writes them back later. On the DAQ machines measured (docs/status.md), a sustained stream
of 2 MiB chunks cost 4-9 ms of CPU per chunk that way (the copy into new pages and their
reclaim: 0.2-0.45 GB/s) against 0.35-0.9 ms with O_DIRECT, where the disk reads the ring
slot itself (1.1-1.4 GB/s). The writer is then bounded by the disk, not by its CPU, and
leaves the CPU to the receiver.

How: HDF5 still owns the file. The `data` dataset is created with early allocation and
no fill writes, in a file whose large objects are aligned to `ALIGNMENT` bytes: growing the
dataset by one image allocates that image's chunk at an aligned file offset, which
`H5Dget_chunk_info_by_coord` returns; the chunk bytes are then written there with
`pwrite()` on a second, O_DIRECT descriptor of the same file. Chunks that are allocated
but never get an image (missing images, a short tail, a torn write) are zeroed: a hole
punched into the file (no disk write; zeros written where the file system cannot punch),
so a missing image reads as zeros whatever the disk held before.

O_DIRECT needs the buffer address, the file offset and the length to be multiples of
the device block: every write checks them and returns False (the caller then writes
through HDF5) when they are not; a file system that refuses O_DIRECT (tmpfs) means
buffered writes for the whole file.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
from typing import Any, Literal

import numpy as np

log = logging.getLogger("stddaq.writer")

IoMode = Literal["direct", "buffered"]
IO_MODES: tuple[IoMode, ...] = ("direct", "buffered")
"""How the writer writes uncompressed images: O_DIRECT where possible, or page cache."""

ALIGNMENT = 4096
"""Alignment of buffers, offsets and lengths for O_DIRECT (covers 512 and 4096 byte devices)."""

MIN_DIRECT_CHUNK_BYTES = 64 * 1024
"""Smaller images are written through HDF5: O_DIRECT would only add a disk round trip."""


def direct_io_possible(chunk_bytes: int) -> bool:
    """True when chunks of this size can be written with O_DIRECT at all."""
    return hasattr(os, "O_DIRECT") and chunk_bytes >= MIN_DIRECT_CHUNK_BYTES and chunk_bytes % ALIGNMENT == 0


FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
"""fallocate(2) mode bits (linux/falloc.h)."""

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a file range (it then reads as zeros); False if the file system cannot."""
    if _fallocate is None:
        return False
    if _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, f"punching a hole of {length} bytes at offset {offset}: {os.strerror(code)}")


def buffer_address(buffer: Any) -> int:
    """The address of a buffer's first byte (read-only buffers included)."""
    return int(np.frombuffer(buffer, np.uint8).ctypes.data)


class DirectChunkWriter:
    """An O_DIRECT descriptor of one file and the zeros it writes for missing chunks."""

    def __init__(self, fd: int, chunk_bytes: int) -> None:
        self._fd = fd
        self.chunk_bytes = chunk_bytes
        self._zeros: mmap.mmap | None = None
        self._can_punch = True
        self.direct_writes = 0
        self.fallback_writes = 0

    @classmethod
    def open(cls, path: str, chunk_bytes: int) -> DirectChunkWriter | None:
        """An O_DIRECT writer of `path`, or None if its file system refuses O_DIRECT."""
        if not direct_io_possible(chunk_bytes):
            return None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            log.info("%s: the file system refuses O_DIRECT; images go through the page cache", path)
            return None
        return cls(fd, chunk_bytes)

    def write(self, offset: int, chunk: Any) -> bool:
        """Write one whole chunk at `offset`; False (nothing written) if it is not aligned.

        Raises OSError (ENOSPC, EFBIG, EIO, ...) if the write fails or is short.
        """
        view = memoryview(chunk).cast("B")
        nbytes = view.nbytes
        if nbytes != self.chunk_bytes or offset % ALIGNMENT or buffer_address(view) % ALIGNMENT:
            self.fallback_writes += 1
            return False
        written = os.pwrite(self._fd, view, offset)
        if written != nbytes:  # a short O_DIRECT write: the device ran out of room
            raise OSError(errno.ENOSPC, f"short write: {written} of {nbytes} bytes at offset {offset}")
        self.direct_writes += 1
        return True

    def zero(self, offset: int) -> bool:
        """Make the chunk at `offset` read as zeros; False if that needs HDF5 (unaligned)."""
        if self._can_punch and punch_hole(self._fd, offset, self.chunk_bytes):
            return True
        self._can_punch = False
        if self._zeros is None:
            self._zeros = mmap.mmap(-1, self.chunk_bytes)  # page-aligned, zero-filled
        return self.write(offset, self._zeros)

    def close(self) -> None:
        """Close the descriptor (HDF5 keeps its own)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._zeros is not None:
            self._zeros.close()
            self._zeros = None
