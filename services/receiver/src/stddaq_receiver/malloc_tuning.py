"""glibc malloc settings that keep ZeroMQ's message buffers' pages mapped between messages.

ZeroMQ's I/O thread allocates one buffer per received message (2 MiB for a 1024 x 1024
uint16 frame), the kernel copies the TCP bytes into it, and the receive loop frees it after
copying the image into the ring. With glibc's defaults these buffers keep going back to the
kernel (freed mmap chunks, trimmed arena tops), so the next message's buffer is fresh
memory and the kernel's copy into it page-faults and zeroes every page first: measured
with `perf` on the receiver, 50-290 k page faults per 3000 frames and about a quarter of
its CPU time (clear_page, fault handling). A fixed mmap threshold above the message size
(no mmap per buffer) and a trim threshold of a few dozen buffers keep the pages for reuse:
3-45 k faults and 10-35 % less CPU per GB in paired runs of bench_receiver.

The cost is memory kept mapped after a burst: at most `TRIM_THRESHOLD_BYTES` of free space
per malloc arena beyond what the messages in flight need.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("stddaq.receiver")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""mallopt parameter numbers (glibc's malloc.h)."""

MAX_MMAP_THRESHOLD_BYTES = 32 * 2**20
"""glibc's largest accepted mmap threshold on 64-bit (HEAP_MAX_SIZE / 2)."""

TRIM_THRESHOLD_BYTES = 64 * 2**20
"""Free memory at the top of an arena that glibc keeps instead of returning it."""


def keep_message_buffers(message_bytes: int) -> bool:
    """Set glibc's mmap and trim thresholds so buffers of `message_bytes` are reused.

    Returns False (and changes nothing) when the C library has no `mallopt` (not glibc)
    or the messages are larger than glibc lets a heap allocation be (they are then mmapped
    one by one whatever we set).
    """
    if message_bytes >= MAX_MMAP_THRESHOLD_BYTES:
        log.info("messages of %d bytes are mmapped one by one: malloc left as it is", message_bytes)
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD_BYTES))
    done = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and done
    return done
