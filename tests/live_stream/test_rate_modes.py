"""Rate modes as pure logic: which ids each mode selects (periodic with a fake clock)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stddaq_common.config.model import LiveStreamConfig
from stddaq_live_stream.rate_modes import (
    BatchMode,
    ForwardMode,
    PeriodicMode,
    rate_mode_for,
)


def test_forward_selects_every_image() -> None:
    mode = ForwardMode()
    assert all(mode.selects(image_id, now=0.0) for image_id in range(1000))


@given(st.integers(1, 50), st.integers(1, 50), st.integers(0, 2**64 - 1000))
def test_batch_selects_ids_whose_remainder_is_below_y(y: int, n: int, start: int) -> None:
    y = min(y, n)
    mode = BatchMode(per_period=y, period=n)
    selected = [i for i in range(start, start + 3 * n) if mode.selects(i, now=0.0)]
    assert selected == [i for i in range(start, start + 3 * n) if i % n < y]
    assert len(selected) == 3 * y


def test_batch_1_of_10_is_every_tenth_id() -> None:
    mode = BatchMode(per_period=1, period=10)
    assert [i for i in range(35) if mode.selects(i, now=0.0)] == [0, 10, 20, 30]


def test_batch_does_not_depend_on_time_or_order() -> None:
    mode = BatchMode(per_period=2, period=5)
    assert [mode.selects(i, now=float(-i)) for i in (7, 6, 5, 11, 12)] == [False, True, True, True, False]


def test_periodic_takes_the_first_y_images_of_each_window() -> None:
    mode = PeriodicMode(per_window=2, windows_per_second=4)  # windows of 250 ms
    arrivals = [(1, 0.00), (2, 0.05), (3, 0.10), (4, 0.24), (5, 0.25), (6, 0.26), (7, 0.27), (8, 0.90)]
    assert [i for i, t in arrivals if mode.selects(i, t)] == [1, 2, 5, 6, 8]


def test_periodic_unused_windows_do_not_carry_over() -> None:
    mode = PeriodicMode(per_window=1, windows_per_second=10)
    # Nothing for a second, then a burst inside one window: still only one image.
    assert [mode.selects(i, 5.0 + i * 0.001) for i in range(5)] == [True, False, False, False, False]


@given(
    st.integers(1, 5),
    st.integers(1, 20),
    st.lists(st.floats(0.0, 0.2, allow_nan=False), min_size=1, max_size=300),
)
def test_periodic_never_more_than_y_per_window_and_first_arrival_always_sent(
    y: int, n: int, gaps: list[float]
) -> None:
    mode = PeriodicMode(per_window=y, windows_per_second=n)
    now = 1000.0
    per_window: dict[int, list[bool]] = {}
    for image_id, gap in enumerate(gaps):
        now += gap
        per_window.setdefault(math.floor(now * n), []).append(mode.selects(image_id, now))
    for decisions in per_window.values():
        # Exactly the first min(Y, arrivals) images of every window, in arrival order.
        taken = min(y, len(decisions))
        assert decisions == [True] * taken + [False] * (len(decisions) - taken)


def test_periodic_ignores_the_image_id() -> None:
    mode = PeriodicMode(per_window=1, windows_per_second=1)
    assert mode.selects(10**18, 0.5) and not mode.selects(0, 0.6)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"type": "forward"}, ForwardMode()),
        ({"type": "forward", "config": [1, 10]}, ForwardMode()),
        ({"type": "batch", "config": [1, 10]}, BatchMode(1, 10)),
        ({"type": "periodic", "config": [3, 5]}, PeriodicMode(3, 5)),
    ],
)
def test_rate_mode_for_config_entries(entry: dict[str, object], expected: object) -> None:
    assert rate_mode_for(LiveStreamConfig.model_validate(entry)) == expected


def test_rate_modes_describe_themselves() -> None:
    assert ForwardMode().describe() == "forward: every image"
    assert BatchMode(1, 10).describe() == "batch [1, 10]: ids with id % 10 < 1"
    assert PeriodicMode(2, 5).describe() == "periodic [2, 5]: the first 2 image(s) of every 200 ms"


@pytest.mark.parametrize(("y", "n"), [(0, 10), (11, 10), (1, 0), (-1, 5)])
def test_batch_rejects_impossible_configs(y: int, n: int) -> None:
    with pytest.raises(ValueError, match="batch"):
        BatchMode(y, n)


@pytest.mark.parametrize(("y", "n"), [(0, 10), (1, 0)])
def test_periodic_rejects_impossible_configs(y: int, n: int) -> None:
    with pytest.raises(ValueError, match="periodic"):
        PeriodicMode(y, n)
