"""One driver per detector: an exclusive flock on `<ipc_dir>/<D>-driver.lock`.

ZeroMQ silently takes over an ipc:// address another process is bound to, so a second
driver would steal the writers of the first. The lock makes the second one refuse to
start instead; the kernel drops it when the holder dies, so a crash never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os


class InstanceLockError(Exception):
    """Another driver for the same detector holds the lock."""


class InstanceLock:
    """Holds the exclusive lock until close()."""

    def __init__(self, ipc_dir: str, detector: str) -> None:
        self.path = os.path.join(ipc_dir, f"{detector}-driver.lock")
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise InstanceLockError(
                    f"another driver for detector {detector!r} is running (pid {holder}, lock "
                    f"{self.path})"
                ) from None
            if self._still_named(fd):
                break
            os.close(fd)  # the previous holder removed this file while we waited: take the new one
        self._fd: int | None = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise InstanceLockError(
                f"cannot open the driver lock file {self.path}: {error.strerror}"
            ) from None

    def _still_named(self, fd: int) -> bool:
        """Whether the lock file's name still points to the file we locked."""
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)

    def close(self) -> None:
        """Remove the lock file (while still holding it, so no one else can hold that file)
        and release the lock: a stopped driver leaves nothing behind."""
        if self._fd is not None:
            if self._still_named(self._fd):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None
