"""The reordering window (stddaq_receiver.reorder): pure logic, no sockets."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stddaq_receiver.reorder import Arrival, ReorderWindow

T = 0.5  # timeout used by the tests


def _started(window: ReorderWindow[int], first_id: int, now: float = 0.0) -> list[int]:
    """Feed `first_id` and let the start grace pass."""
    assert window.arrive(first_id, now) is Arrival.ACCEPTED
    window.complete(first_id, first_id)
    return window.release(now + T, idle=True)


def _feed(window: ReorderWindow[int], image_id: int, now: float) -> tuple[Arrival, list[int]]:
    verdict = window.arrive(image_id, now)
    if verdict.accepted:
        window.complete(image_id, image_id)
    return verdict, window.release(now)


def test_start_waits_for_the_grace_then_begins_at_the_lowest_id() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=16, timeout=T)
    for image_id in (12, 10, 11):
        assert _feed(window, image_id, 0.0)[1] == []
    assert window.next_id is None
    assert window.release(T, idle=True) == [10, 11, 12]
    assert window.next_id == 13


def test_start_ends_early_when_the_window_is_full() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=4, timeout=T)
    released: list[int] = []
    for image_id in (1, 0, 3, 2):
        released += _feed(window, image_id, 0.0)[1]
    assert released == [0, 1, 2, 3]


def test_start_ends_early_when_a_frame_a_window_above_the_lowest_arrives() -> None:
    """A sequence that starts with ids further apart than the window (the ring would reuse
    slots): the lowest ones are released (or orphaned) before the far one is written."""
    window: ReorderWindow[int] = ReorderWindow(size=16, timeout=T)
    assert _feed(window, 3, 0.0)[1] == []
    assert window.arrive(5, 0.0) is Arrival.ACCEPTED  # still being written
    assert window.arrive(21, 0.0) is Arrival.ACCEPTED  # 18 ids above 3: the window moves to 6
    assert window.next_id == 6 and window.has_released
    assert window.release(0.0) == [3]
    assert not window.complete(5, 5)  # orphaned: the window moved past it mid-write
    assert (window.counters.orphaned, window.counters.missing) == (1, 1)  # 4 never came


def test_beyond_and_restarts_at_tell_what_an_id_would_do() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=16, timeout=T)
    assert not window.beyond(10**6)  # nothing received: nothing to give up
    window.arrive(40, 0.0)
    assert not window.beyond(55) and window.beyond(56)  # the lowest received (40) + 16
    assert not window.restarts_at(0)  # no sequence yet
    window.complete(40, 40)
    window.release(T, idle=True)  # next expected: 41
    assert not window.beyond(56) and window.beyond(57)
    assert not window.restarts_at(25) and window.restarts_at(24)


def test_in_order_frames_leave_at_once() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=16, timeout=T)
    assert _started(window, 0) == [0]
    for image_id in range(1, 50):
        assert _feed(window, image_id, T)[1] == [image_id]
    assert window.waiting == 0


def test_out_of_order_frames_are_put_back_in_order() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=16, timeout=T)
    _started(window, 0)
    released: list[int] = []
    for image_id in (2, 3, 1, 5, 4, 8, 6, 7):
        released += _feed(window, image_id, T)[1]
    assert released == list(range(1, 9))
    assert window.counters.missing == 0


def test_a_missing_id_is_given_up_after_the_timeout_and_a_late_one_dropped() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=16, timeout=T)
    _started(window, 0)
    assert _feed(window, 2, 1.0)[1] == []
    assert _feed(window, 3, 1.1)[1] == []
    assert window.release(1.0 + T - 0.01, idle=True) == []
    assert window.release(1.0 + T, idle=True) == [2, 3]
    assert (window.counters.missing, window.counters.gaps) == (1, 1)
    assert _feed(window, 1, 2.0) == (Arrival.LATE, [])
    assert window.counters.late == 1


def test_a_jump_of_a_whole_window_gives_up_the_gap_at_once() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=8, timeout=T)
    _started(window, 0)
    assert _feed(window, 1000, T) == (Arrival.ACCEPTED, [])
    assert window.counters.missing == 992  # 1..992: more than a window below 1000
    assert window.next_id == 993  # 993..999 may still come
    assert window.release(2 * T, idle=True) == [1000]
    assert window.counters.missing == 999


def test_duplicates_are_dropped_waiting_or_released() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=16, timeout=T)
    _started(window, 0)
    assert _feed(window, 2, T)[0] is Arrival.ACCEPTED
    assert _feed(window, 2, T)[0] is Arrival.DUPLICATE  # still waiting for 1
    assert _feed(window, 0, T)[0] is Arrival.DUPLICATE  # released already
    assert _feed(window, 1, T)[1] == [1, 2]
    assert window.counters.duplicates == 2


def test_a_restart_closes_the_old_sequence_and_starts_a_new_one() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=8, timeout=T)
    _started(window, 100)
    _feed(window, 101, T)
    _feed(window, 103, T)  # 102 never comes
    verdict, released = _feed(window, 5, 1.0)
    assert verdict is Arrival.RESTARTED
    assert released == [103]  # the old sequence, closed
    assert window.counters.restarts == 1
    assert window.counters.missing == 1
    _feed(window, 4, 1.0)
    assert window.release(1.0 + T, idle=True) == [4, 5]


def test_a_small_jump_back_looks_like_duplicates() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=8, timeout=T)
    _started(window, 10)
    assert _feed(window, 7, T)[0] is Arrival.DUPLICATE
    assert window.counters.restarts == 0


def test_an_abandoned_frame_is_skipped_without_counting_it_missing() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=8, timeout=T)
    _started(window, 0)
    assert window.arrive(1, T) is Arrival.ACCEPTED
    window.abandon(1)
    assert _feed(window, 2, T)[1] == [2]
    assert window.counters.missing == 0
    assert window.counters.abandoned == 1
    assert _feed(window, 1, T)[0] is Arrival.DUPLICATE


def test_a_frame_being_written_holds_the_head_until_it_completes() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=8, timeout=T)
    _started(window, 0)
    assert window.arrive(1, T) is Arrival.ACCEPTED  # being written by another thread
    assert _feed(window, 2, T)[1] == []
    assert window.release(10.0, idle=True) == []  # in flight, not missing: no timeout applies
    window.complete(1, 1)
    assert window.release(10.0, idle=True) == [1, 2]


def test_a_frame_being_written_across_a_restart_is_orphaned() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=8, timeout=T)
    _started(window, 100)
    assert window.arrive(101, T) is Arrival.ACCEPTED
    assert window.arrive(0, 1.0) is Arrival.RESTARTED
    assert window.complete(101, 101) is False
    assert window.counters.orphaned == 1
    window.complete(0, 0)
    assert window.release(1.0 + T, idle=True) == [0]


def test_close_releases_everything_finished() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=16, timeout=T)
    for image_id in (3, 1, 6):
        _feed(window, image_id, 0.0)
    assert window.close() == [1, 3, 6]
    assert window.counters.missing == 3


def test_nothing_waits_longer_than_the_timeout() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=1000, timeout=T)
    _started(window, 0)
    for image_id in range(5, 500, 7):
        _feed(window, image_id, 1.0)
    assert window.release(1.0 + T, idle=True) == list(range(5, 500, 7))
    assert window.waiting == 0


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    size=st.integers(8, 64),
    drop=st.floats(0, 0.3),
    dup=st.floats(0, 0.2),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_bounded_shuffle_leaves_in_order_and_counts_right(
    n: int, size: int, drop: float, dup: float, seed: int
) -> None:
    rng = random.Random(seed)
    displacement = size // 2 - 1
    ids = sorted(range(n), key=lambda i: i + rng.uniform(0, displacement))
    sent = [i for i in ids if rng.random() >= drop]
    stream: list[int] = []
    for image_id in sent:
        stream.append(image_id)
        if rng.random() < dup:
            stream.append(image_id)
    window: ReorderWindow[int] = ReorderWindow(size=size, timeout=T)
    released: list[int] = []
    for image_id in stream:  # the clock never advances: only the window bound applies
        released += _feed(window, image_id, 0.0)[1]
    released += window.close()
    unique = sorted(set(sent))
    assert released == unique
    assert window.counters.duplicates == len(stream) - len(unique)
    if unique:
        assert window.counters.missing == (unique[-1] - unique[0] + 1) - len(unique)


def test_while_the_input_is_busy_only_the_hard_timeout_gives_up_ids() -> None:
    window: ReorderWindow[int] = ReorderWindow(size=64, timeout=T, hard_timeout=4 * T)
    _started(window, 0)
    _feed(window, 2, 1.0)
    assert window.release(1.0 + 2 * T) == []  # busy: id 1 may sit in another queue
    assert window.release(1.0 + 4 * T) == [2]
    assert window.counters.missing == 1
