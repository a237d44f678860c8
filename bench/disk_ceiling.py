"""The disk's own ceiling: one process writing frames with O_DIRECT, no HDF5, no page cache.

HDF5's direct chunk write into the page cache runs at memory speed while free memory
lasts (a short run) and then at the speed the kernel can find, fill and write back pages
(several ms of CPU per 2 MiB chunk on these machines). This is the device's own figure
beside it: the same frames, copied once into page-aligned buffers before the clock starts,
written back to back with `pwrite()` on an O_DIRECT descriptor of a new file on the same
disk, then the file closed and removed.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np

from bench.harness import Stopwatch


def aligned_copies(frames: list[np.ndarray[Any, Any]]) -> list[mmap.mmap]:
    """Page-aligned copies of the frames (O_DIRECT needs aligned buffers)."""
    copies = []
    for frame in frames:
        buffer = mmap.mmap(-1, frame.nbytes)
        buffer[:] = frame.tobytes()
        copies.append(buffer)
    return copies


def direct_write_seconds(buffers: list[mmap.mmap], n: int, path: str) -> float:
    """Seconds for one process to write n frames (cycling `buffers`) with O_DIRECT."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
    try:
        with Stopwatch() as watch:
            offset = 0
            for index in range(n):
                buffer = buffers[index % len(buffers)]
                offset += os.pwrite(fd, buffer, offset)
    finally:
        os.close(fd)
        os.unlink(path)
    return watch.seconds
