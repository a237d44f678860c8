"""Write-behind: a writer file's data leaves the page cache soon after it is written.

Why: a writer streams images into a file that nobody reads back soon. Left to itself the
kernel keeps every written page cached and dirty until its writeback thresholds are hit;
the page cache then keeps taking pages it has never used (on the DAQ machines measured
here the kernel's copy into such pages, their first touch and their reclaim cost 4-5 ms
of CPU per 2 MiB image once a stream outgrew free memory: 200 images/s from one process,
docs/status.md) and the writer's memory pressure evicts what other services need.

What: every `window_bytes` written, the writer starts the writeback of what it wrote
since the last window (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait) and
drops the pages of the window before, whose writeback has had a window's time to finish
(`posix_fadvise(POSIX_FADV_DONTNEED)`; pages still dirty are left alone). The file's
pages in the cache stay around two windows, and the kernel reuses the pages it just
freed: 0.6-0.7 k images/s at 1.1 ms CPU each in the same test. HDF5 still writes the
file; nothing about its content or layout changes. Both calls are hints: a file system
that refuses them just gets plain buffered writes (logged once).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os

log = logging.getLogger("stddaq.writer")

DEFAULT_WINDOW_BYTES = 32 * 2**20
"""Bytes written between two write-behind steps (16 images of 2 MiB)."""

SYNC_FILE_RANGE_WRITE = 2
"""sync_file_range(2) flag: start writeback of the range's dirty pages, do not wait."""

_libc = ctypes.CDLL(None, use_errno=True)
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _sync_file_range.restype = ctypes.c_int


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing back a file range's dirty pages (no wait); OSError if refused."""
    if _sync_file_range is None:
        raise OSError(errno.ENOSYS, "sync_file_range is not available")
    if _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class WriteBehind:
    """Keeps one file's written data from piling up in the page cache (off when
    `window_bytes` is 0)."""

    def __init__(self, path: str, window_bytes: int = DEFAULT_WINDOW_BYTES) -> None:
        self.path = path
        self.window_bytes = window_bytes
        self.enabled = window_bytes > 0
        self._fd = -1
        if self.enabled:
            try:
                self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as error:  # a hint only: never a reason to fail the file
                self.enabled = False
                log.info("%s: write-behind off (%s): plain buffered writes", path, error.strerror)
        self._pending = 0
        self._written_back_to = 0
        """End of the range whose writeback was started at the last step."""
        self._dropped_to = 0
        self.steps = 0

    def wrote(self, nbytes: int) -> None:
        """Account `nbytes` just written; every `window_bytes` take one write-behind step."""
        if not self.enabled:
            return
        self._pending += nbytes
        if self._pending >= self.window_bytes:
            self._pending = 0
            self.step()

    def step(self) -> None:
        """Drop the range written back at the last step; start writing back the rest."""
        fd = self._fd
        try:
            size = os.fstat(fd).st_size
            if self._written_back_to > self._dropped_to:
                os.posix_fadvise(fd, self._dropped_to, self._written_back_to - self._dropped_to,
                                 os.POSIX_FADV_DONTNEED)
                self._dropped_to = self._written_back_to
            if size > self._written_back_to:
                start_writeback(fd, self._written_back_to, size - self._written_back_to)
                self._written_back_to = size
            self.steps += 1
        except OSError as error:
            self.enabled = False
            log.info("%s: write-behind off (%s): plain buffered writes", self.path, error.strerror)

    def close(self) -> None:
        """Close the descriptor (the file itself is HDF5's)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
