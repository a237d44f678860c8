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
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise InstanceLockError(
                f"cannot open the driver lock file {self.path}: {error.strerror}"
            ) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise InstanceLockError(
                f"another driver for detector {detector!r} is running (pid {holder}, lock "
                f"{self.path})"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def close(self) -> None:
        """Release the lock (the file stays; it is reused by the next driver)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
