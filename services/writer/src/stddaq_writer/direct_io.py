"""Writing whole uncompressed image chunks with O_DIRECT, straight from the ring slot.

Several whole chunks that follow each other in the file (a batch of images) go out in one
gathered `pwritev()` (`write_run`): one system call, one block request and one wait for
the disk instead of one each.

Why: a buffered write copies every image into page-cache pages that the kernel must find,
fill, write back and reclaim (about 1.7 ms of CPU per 2 MiB image here, with write-behind);
with O_DIRECT the disk reads the ring slot itself (0.3-0.4 ms). The file is the same.

How the writer knows where a chunk goes, without asking HDF5's chunk index per image
(`H5Dget_chunk_info_by_coord` walks the whole index: 2 ms per call at 20,000 chunks):
the `data` dataset is created with early allocation, no fill writes, and large
allocations aligned to `ALIGNMENT` (h5_layout). Growing `data` by a block of images then
allocates exactly those chunks, one after the other in index order, at the end of the
file. The writer reads the file's end of allocation before and after (`H5Fget_filesize`,
no I/O; the "before" is the "after" of the previous growth when nothing else was
allocated in between): when it grew by exactly the alignment padding plus the block's
aligned chunks, chunk k of the block is at `start + k * align_up(chunk_bytes)`. Any other
layout of the growth (HDF5 put a metadata block among the chunks: with 1 MiB metadata
blocks (h5_layout) only the first growth of a file) is resolved by asking the index for
each chunk of that block; the first chunk of every file and every `VERIFY_EVERY`-th one
are also checked against the index (cheap, amortised), and a
mismatch turns O_DIRECT off for the file (logged), so a wrong offset is never used twice.

O_DIRECT needs buffer address, file offset and length to be multiples of the device's
block (512 bytes on most devices, 4096 on some). Chunks start 4096-aligned (h5_layout);
the largest 4096-multiple head of an image goes out with O_DIRECT and a tail that is not
a whole block (images whose size is not a multiple of 4096) with a plain buffered
`pwrite()` on a second descriptor. A buffer that is not 512-aligned, or that the device
refuses (EINVAL: then 4096 is required from there on), makes `write` return False and the
caller writes that image through HDF5 (buffered): ring slots are at multiples of the image
size, so slots of e.g. 2016 x 2016 x 2 bytes are 512- but not 4096-aligned. A file system
that refuses O_DIRECT means buffered writes for the whole file. A chunk that must read as
zeros (missing, torn) gets a hole punched (zeros written where the file system cannot).
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
"""How a writer writes uncompressed images: O_DIRECT where possible, or the page cache."""

ALIGNMENT = 4096
"""Alignment of chunk offsets and O_DIRECT lengths (covers 512 and 4096 byte blocks)."""

MEMORY_ALIGNMENT = 512
"""Buffer alignment tried first (what most devices need); 4096 after an EINVAL."""

MIN_DIRECT_CHUNK_BYTES = 64 * 1024
"""Smaller images go through HDF5: O_DIRECT would add a disk round trip for little gain. It
also keeps every chunk larger than anything else HDF5 allocates or frees in a writer file
(metadata blocks, 32-64 KiB record chunks), which the offset rule above relies on."""

MAX_RUN = 64
"""Most chunks one gathered write takes (far below the kernel's IOV_MAX of 1024)."""

VERIFY_EVERY = 1024
"""Every this many chunks the offset is also checked against the chunk index."""

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
"""fallocate(2) mode bits (linux/falloc.h)."""

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int


def direct_io_possible(chunk_bytes: int) -> bool:
    """True when chunks of this size can be written with O_DIRECT at all."""
    return hasattr(os, "O_DIRECT") and chunk_bytes >= MIN_DIRECT_CHUNK_BYTES


def align_up(value: int, alignment: int = ALIGNMENT) -> int:
    """`value` rounded up to a multiple of `alignment`."""
    return -(-value // alignment) * alignment


def buffer_address(buffer: Any) -> int:
    """The address of a buffer's first byte (read-only buffers included)."""
    return int(np.frombuffer(buffer, np.uint8).ctypes.data)


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


class DirectChunkWriter:
    """An O_DIRECT descriptor of one file: whole aligned chunks, and zeros for missing ones."""

    def __init__(self, fd: int, chunk_bytes: int, tail_fd: int = -1) -> None:
        self._fd = fd
        self._tail_fd = tail_fd
        self.chunk_bytes = chunk_bytes
        self._head = chunk_bytes - chunk_bytes % ALIGNMENT
        self._memory_alignment = MEMORY_ALIGNMENT
        self._zeros: mmap.mmap | None = None
        self._can_punch = True
        self.direct_writes = 0
        self.unaligned_writes = 0

    @classmethod
    def open(cls, path: str, chunk_bytes: int) -> DirectChunkWriter | None:
        """An O_DIRECT writer of `path`, or None if chunks of this size or the file system
        do not allow O_DIRECT (logged)."""
        if not direct_io_possible(chunk_bytes):
            return None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            log.info("%s: the file system refuses O_DIRECT; images go through the page cache", path)
            return None
        tail_fd = -1
        if chunk_bytes % ALIGNMENT:
            try:
                tail_fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except BaseException:
                os.close(fd)
                raise
        return cls(fd, chunk_bytes, tail_fd)

    def write(self, offset: int, chunk: Any, address: int | None = None) -> bool:
        """Write one whole chunk at `offset`; False (nothing written) if it is not aligned.

        `address`: where `chunk`'s first byte is in memory, if the caller knows it (a ring
        slot view does; looking it up costs more than the rest of this method).
        Raises OSError (ENOSPC, EFBIG, EIO, ...) if the write fails or is short.
        """
        view = memoryview(chunk).cast("B")
        nbytes = view.nbytes
        if address is None:
            address = buffer_address(view)
        if nbytes != self.chunk_bytes or offset % ALIGNMENT or address % self._memory_alignment:
            self.unaligned_writes += 1
            return False
        head = self._head
        try:
            written = os.pwrite(self._fd, view if head == nbytes else view[:head], offset)
        except OSError as error:
            if error.errno != errno.EINVAL or address % ALIGNMENT == 0:
                raise
            self._memory_alignment = ALIGNMENT  # this device needs page-aligned buffers
            self.unaligned_writes += 1
            return False
        if written != head:  # a short O_DIRECT write: the device ran out of room
            raise OSError(errno.ENOSPC, f"short write: {written} of {head} bytes at offset {offset}")
        if head < nbytes:
            tail = os.pwrite(self._tail_fd, view[head:], offset + head)
            if tail != nbytes - head:
                raise OSError(errno.ENOSPC, f"short write: {tail} of {nbytes - head} tail bytes")
        self.direct_writes += 1
        return True

    def write_run(self, offset: int, chunks: list[memoryview], addresses: list[int]) -> bool:
        """Write whole chunks that lie one after the other in the file, from `offset` on,
        in one gathered `pwritev()` (one system call and one block request for all);
        False (nothing written) where that cannot be: a chunk size that is not a whole
        number of blocks, an unaligned offset or buffer (`addresses`: each chunk's first
        byte in memory), or more chunks than one call takes.

        Raises OSError (ENOSPC, EFBIG, EIO, ...) if the write fails or is short: the chunks
        may then be partly written (the caller writes them again one by one, which finds
        the chunk that fails).
        """
        chunk_bytes = self.chunk_bytes
        count = len(chunks)
        if self._head != chunk_bytes or offset % ALIGNMENT or count > MAX_RUN:
            return False
        alignment = self._memory_alignment
        for chunk, address in zip(chunks, addresses, strict=True):
            if address % alignment or chunk.nbytes != chunk_bytes:
                return False
        try:
            written = os.pwritev(self._fd, chunks, offset)
        except OSError as error:
            if error.errno != errno.EINVAL or all(address % ALIGNMENT == 0 for address in addresses):
                raise
            self._memory_alignment = ALIGNMENT  # this device needs page-aligned buffers
            return False
        if written != chunk_bytes * count:
            raise OSError(
                errno.ENOSPC, f"short write: {written} of {chunk_bytes * count} bytes at offset {offset}"
            )
        self.direct_writes += count
        return True

    def zero(self, offset: int) -> None:
        """Make the chunk at `offset` read as zeros (a hole, or zeros written)."""
        if self._can_punch and punch_hole(self._fd, offset, self.chunk_bytes):
            return
        self._can_punch = False
        if self._zeros is None:
            self._zeros = mmap.mmap(-1, self.chunk_bytes)  # page-aligned, zero-filled
        if not self.write(offset, self._zeros):
            raise OSError(errno.EINVAL, f"cannot zero the chunk at unaligned offset {offset}")

    def close(self) -> None:
        """Close the descriptor (HDF5 keeps its own)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._tail_fd >= 0:
            os.close(self._tail_fd)
            self._tail_fd = -1
        if self._zeros is not None:
            self._zeros.close()
            self._zeros = None
