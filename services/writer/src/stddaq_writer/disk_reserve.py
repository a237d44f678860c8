"""Room to close a file cleanly on a full disk.

When the disk fills, HDF5 still has to write its metadata (chunk index, object headers,
the held per-image records) to close the file; without space the close fails and the
file may be unreadable. So next to each writer file the writer preallocates a small
hidden reserve file `.<name>.reserve`; when a write fails, the reserve is deleted first,
which frees exactly the room the close needs. The reserve is always deleted when the
file is closed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource

log = logging.getLogger("stddaq.writer")

DEFAULT_RESERVE_BYTES = 8 * 1024 * 1024
"""Enough for the metadata of millions of chunks and a second of held records."""


def reserve_path(file_path: str) -> str:
    """`<dir>/.<name>.reserve` next to `file_path`."""
    directory, name = os.path.split(file_path)
    return os.path.join(directory, f".{name}.reserve")


class DiskReserve:
    """A preallocated file that is given back when the disk is full."""

    def __init__(self, file_path: str, nbytes: int = DEFAULT_RESERVE_BYTES) -> None:
        """Preallocate `nbytes` next to `file_path` (OSError if that is not possible)."""
        self.path = reserve_path(file_path)
        self.nbytes = nbytes
        self._held = False
        if nbytes <= 0:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._held = True
        try:
            _preallocate(fd, nbytes)
        except OSError:
            os.close(fd)
            self.release()
            raise
        os.close(fd)

    @property
    def held(self) -> bool:
        """True until the reserve is given back."""
        return self._held

    def release(self) -> None:
        """Delete the reserve file (idempotent). If its directory no longer allows that (made
        read-only meanwhile), empty it instead: the room is given back all the same."""
        if not self._held:
            return
        self._held = False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("cannot remove the disk reserve %s (%s): emptied instead", self.path, error.strerror)
            with contextlib.suppress(OSError):
                os.truncate(self.path, 0)


MIN_CLOSE_MARGIN_BYTES = 1024 * 1024
"""Least room kept below a file-size limit for HDF5 to close the file."""


def file_size_budget(reserve_bytes: int) -> tuple[int, int] | None:
    """(bytes of images a file may take, the file-size limit) under this process's
    RLIMIT_FSIZE, keeping the reserve's size (at least 1 MiB) below the limit so that HDF5
    can still finish the file: a file HDF5 cannot close is left unfinished (and h5py may
    crash when it frees it). None when there is no limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(0, soft - max(reserve_bytes, MIN_CLOSE_MARGIN_BYTES)), soft


def _preallocate(fd: int, nbytes: int) -> None:
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # the filesystem cannot
            raise
        block = bytes(1024 * 1024)
        written = 0
        while written < nbytes:
            written += os.write(fd, block[: nbytes - written])
        os.fsync(fd)
