"""The fake camera's send plan (stddaq_fake_camera.schedule): fault modes by pulse id."""

from __future__ import annotations

import itertools

import pytest

from stddaq_fake_camera.schedule import Faults, SendKind, parse_burst, parse_ids, send_plan


def _ids(first: int, n: int | None, faults: Faults, limit: int = 10_000) -> list[int]:
    return [pid for pid, kind in itertools.islice(send_plan(first, n, faults), limit)
            if kind is not SendKind.RESTART]


def test_plain_plan_counts_up_from_the_first_id() -> None:
    assert _ids(100, 5, Faults()) == [100, 101, 102, 103, 104]


def test_endless_plan_keeps_going() -> None:
    assert len(_ids(0, None, Faults(), limit=5000)) == 5000


def test_skip_duplicate_and_kinds() -> None:
    faults = Faults(skip=frozenset({1}), duplicate=frozenset({2}), wrong_shape=frozenset({3}),
                    garbage=frozenset({4}))
    assert list(send_plan(0, 6, faults)) == [
        (0, SendKind.FRAME),
        (2, SendKind.FRAME),
        (2, SendKind.FRAME),
        (3, SendKind.WRONG_SHAPE),
        (4, SendKind.GARBAGE),
        (5, SendKind.FRAME),
    ]


def test_reverse_bursts_are_sent_backwards() -> None:
    faults = Faults(reverse_bursts=((2, 3), (7, 2)))
    assert _ids(0, 10, Faults(reverse_bursts=faults.reverse_bursts)) == [0, 1, 4, 3, 2, 5, 6, 8, 7, 9]


def test_a_burst_cut_by_the_end_is_still_sent() -> None:
    assert _ids(0, 4, Faults(reverse_bursts=((2, 5),))) == [0, 1, 3, 2]


def test_restarts_go_back_to_the_first_id_with_a_marker() -> None:
    plan = list(send_plan(10, 5, Faults(restart_every=2)))
    assert plan == [
        (10, SendKind.FRAME), (11, SendKind.FRAME), (10, SendKind.RESTART),
        (10, SendKind.FRAME), (11, SendKind.FRAME), (10, SendKind.RESTART), (10, SendKind.FRAME),
    ]


def test_parse_ids_and_bursts() -> None:
    assert parse_ids("5, 7,10-12") == frozenset({5, 7, 10, 11, 12})
    assert parse_ids("") == frozenset()
    assert parse_burst("80:12") == (80, 12)
    for bad in ("x", "5-3", "-1"):
        with pytest.raises(ValueError, match=repr(bad)):
            parse_ids(bad)
    for bad in ("80", "80:1", "a:b"):
        with pytest.raises(ValueError):
            parse_burst(bad)
