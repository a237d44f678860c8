"""The receiver's glibc malloc settings (keep ZeroMQ's message buffers mapped)."""

from __future__ import annotations

import platform

import pytest

from stddaq_receiver.malloc_tuning import MAX_MMAP_THRESHOLD_BYTES, keep_message_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_frames_below_glibcs_limit_get_reusable_buffers() -> None:
    assert keep_message_buffers(2 * 1024 * 1024) is True


def test_frames_glibc_always_mmaps_are_left_alone() -> None:
    assert keep_message_buffers(MAX_MMAP_THRESHOLD_BYTES) is False
