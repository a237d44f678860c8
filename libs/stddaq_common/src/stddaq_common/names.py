"""The names std_daq fixes: shared-memory objects and metadata-stream addresses."""

from __future__ import annotations

import os

IMAGE_SUFFIX = "image"
"""Suffix of the first buffer a user service can attach to: raw grayscale images."""

DEFAULT_IPC_DIR = "/tmp"


def shm_name(detector_name: str, suffix: str = IMAGE_SUFFIX) -> str:
    """POSIX shared-memory object name of a buffer, `<detector>-<suffix>` (no slash)."""
    return f"{detector_name}-{suffix}"


def shm_path(detector_name: str, suffix: str = IMAGE_SUFFIX, shm_dir: str = "/dev/shm") -> str:
    """Path of a buffer's shared-memory object, `/dev/shm/<detector>-<suffix>`."""
    return os.path.join(shm_dir, shm_name(detector_name, suffix))


def ipc_path(detector_name: str, suffix: str = IMAGE_SUFFIX, ipc_dir: str = DEFAULT_IPC_DIR) -> str:
    """Filesystem path of a buffer's metadata socket, `<ipc_dir>/<detector>-<suffix>`."""
    return os.path.join(ipc_dir, f"{detector_name}-{suffix}")


def ipc_address(detector_name: str, suffix: str = IMAGE_SUFFIX, ipc_dir: str = DEFAULT_IPC_DIR) -> str:
    """ZeroMQ address of a buffer's metadata PUB socket, `ipc://<ipc_dir>/<detector>-<suffix>`."""
    return "ipc://" + ipc_path(detector_name, suffix, ipc_dir)
