"""The driver's pause after a wake-up that emptied its queue: ended by a count of what
waits, or (libzmq, no count) bounded by the ring at the fastest possible ingest."""

from __future__ import annotations

import pytest

from stddaq_driver.image_dealing import DEAL_BATCH, GATHER_MAX_S, gather_pause, gather_target


def test_the_target_is_an_eighth_of_the_ring_a_batch_or_what_the_acquisition_still_needs() -> None:
    assert gather_target(1000, None) == DEAL_BATCH
    assert gather_target(200, None) == 25
    assert gather_target(1000, 3) == 3
    assert gather_target(1000, 0) == 1
    assert gather_target(4, None) == 1


def test_without_a_count_two_mib_images_in_a_thousand_slots_allow_a_short_pause() -> None:
    pause = gather_pause(1000, 2 * 2**20)
    # At 10 GB/s of 2 MiB images (4,768 images/s) a quarter of the ring fills in 52 ms.
    assert pause == pytest.approx(1000 / 4 / (10e9 / 2**21))
    assert 0.05 < pause < GATHER_MAX_S


def test_without_a_count_small_images_in_a_small_ring_get_no_pause() -> None:
    # A backlog of 8 KiB images can arrive at 100,000 images/s: 1000 slots last 10 ms, and
    # a quarter of them (2.5 ms) is below the shortest pause worth a sleep.
    assert gather_pause(1000, 8192) == 0.0
    assert gather_pause(16, 2 * 2**20) == 0.0


def test_without_a_count_a_big_ring_is_capped() -> None:
    assert gather_pause(20_000, 2 * 2**20) == GATHER_MAX_S
