"""Binding `ipc://` names safely: never over a live process, removing only our own file.

ZeroMQ replaces whatever file is at an ipc path when it binds, so a second service bound
at a name that another process serves silently takes it over (and removes it on exit).
`claim` refuses that, naming the path and the process that answers there; `OwnSocketFile`
remembers the file a bind created and removes that file only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct

from stddaq_common.bus.metadata_stream import ipc_file_of

log = logging.getLogger(__name__)

_MAX_UNIX_PATH_BYTES = 107
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class AddressInUse(OSError):
    """An ipc name that cannot be bound (served by a live process, not a socket, ...)."""


def _describe_process(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return f"pid {pid}"
    command = " ".join(word.decode(errors="replace") for word in words if word)
    return f"pid {pid} ({command[:160]})" if command else f"pid {pid}"


def who_serves(path: str) -> str | None:
    """A description of the process listening on the Unix socket `path` (None: nobody)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
        try:
            cred = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            pid, _, _ = _PEERCRED.unpack(cred)
        except OSError:
            pid = 0
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    except OSError as error:
        return f"an unknown peer ({error.strerror})"
    finally:
        probe.close()
    return _describe_process(pid) if pid > 0 else "a live process"


def claim(address: str) -> None:
    """Make `address` free for binding, or raise AddressInUse naming what is there.

    A socket file that nobody answers on is left over from a process that is gone and is
    removed; a live one, or a file that is not a socket, is never touched.
    """
    path = ipc_file_of(address)
    if path is None:
        return
    length = len(os.fsencode(path))
    if length > _MAX_UNIX_PATH_BYTES:
        raise AddressInUse(
            f"cannot bind {address}: the socket path is {length} bytes, Unix sockets allow at "
            f"most {_MAX_UNIX_PATH_BYTES}; use a shorter ipc_dir"
        )
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise AddressInUse(f"cannot bind {address}: {path} exists and is not a socket")
    serving = who_serves(path)
    if serving is not None:
        raise AddressInUse(
            f"cannot bind {address}: {path} is served by a live process, {serving} "
            "(another driver or writer of this detector, or a std_daq service, is running)"
        )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    log.warning("removed the stale socket file %s (its process is gone)", path)


def share_with_folder_group(address: str) -> None:
    """Let the group of the socket's folder connect to a socket file this process bound
    (group of the folder, mode 0770). A writer runs as root to write files as any user,
    while the driver that connects to its answer socket runs as the folder's group: with
    root's default mode 0755 it could not connect. Not root (one user for every service):
    only the mode changes, which is what that user needs."""
    path = ipc_file_of(address)
    if path is None:
        return
    with contextlib.suppress(OSError):
        folder_gid = os.stat(os.path.dirname(path) or ".").st_gid
        if os.geteuid() == 0:
            os.chown(path, -1, folder_gid)
        os.chmod(path, 0o770)


class OwnSocketFile:
    """The file a bind at an ipc address created: `remove()` deletes it only if it is
    still that file (a process bound there after us keeps its own)."""

    def __init__(self, address: str) -> None:
        self._path = ipc_file_of(address)
        self._inode: tuple[int, int] | None = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                info = os.stat(self._path)
                self._inode = (info.st_dev, info.st_ino)

    def remove(self) -> None:
        """Delete the socket file if it is still the one this bind created."""
        if self._path is None or self._inode is None:
            return
        try:
            info = os.stat(self._path)
            if (info.st_dev, info.st_ino) == self._inode:
                os.unlink(self._path)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("could not remove socket file %s: %s", self._path, error.strerror)
        self._inode = None
