"""What a detector's stack may leave behind: shared-memory segments and ipc socket files."""

from __future__ import annotations

import glob
import os

from stddaq_common.config.model import DaqConfig


def leftover_paths(config: DaqConfig, shm_dir: str = "/dev/shm") -> list[str]:
    """Shared-memory objects `<shm_dir>/<D>-*` and ipc sockets `<ipc_dir>/<D>-*` that exist."""
    prefix = f"{config.detector_name}-"
    found = glob.glob(os.path.join(glob.escape(shm_dir), glob.escape(prefix) + "*"))
    found += glob.glob(os.path.join(glob.escape(config.ipc_dir), glob.escape(prefix) + "*"))
    return sorted(path for path in found if not os.path.isdir(path))


def remove_leftovers(config: DaqConfig, shm_dir: str = "/dev/shm") -> list[str]:
    """Remove what `leftover_paths` finds (after every service has stopped); returns them."""
    removed = []
    for path in leftover_paths(config, shm_dir):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
