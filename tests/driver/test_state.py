"""The acquisition state machine: std_daq's states and the allowed transitions."""

from __future__ import annotations

import itertools

import pytest

from stddaq_driver.state import (
    ALLOWED_TRANSITIONS,
    DaqState,
    TransitionError,
    accepts_start,
    can_move,
    check_move,
    is_stoppable,
)

UPSTREAM_STATES = [
    "idle", "started", "creating_file", "file_created", "waiting_for_first_image",
    "recording", "saving_file", "file_saved", "stop", "error",
]


def test_state_names_are_upstream_names() -> None:
    assert [state.value for state in DaqState] == UPSTREAM_STATES


def test_every_state_has_transitions() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(DaqState)


def test_the_happy_path_is_allowed() -> None:
    path = [
        DaqState.IDLE, DaqState.STARTED, DaqState.CREATING_FILE, DaqState.FILE_CREATED,
        DaqState.WAITING_FOR_FIRST_IMAGE, DaqState.RECORDING, DaqState.SAVING_FILE,
        DaqState.FILE_SAVED, DaqState.IDLE,
    ]
    for current, target in itertools.pairwise(path):
        check_move(current, target)


@pytest.mark.parametrize(
    "state",
    [DaqState.STARTED, DaqState.CREATING_FILE, DaqState.FILE_CREATED,
     DaqState.WAITING_FOR_FIRST_IMAGE, DaqState.RECORDING],
)
def test_a_running_acquisition_can_be_stopped_and_can_fail(state: DaqState) -> None:
    assert is_stoppable(state)
    assert can_move(state, DaqState.STOP)
    assert can_move(state, DaqState.ERROR)


def test_stop_saves_and_every_end_returns_to_idle() -> None:
    assert can_move(DaqState.STOP, DaqState.SAVING_FILE)
    assert can_move(DaqState.FILE_SAVED, DaqState.IDLE)
    assert can_move(DaqState.ERROR, DaqState.IDLE)
    assert can_move(DaqState.SAVING_FILE, DaqState.ERROR)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (DaqState.IDLE, DaqState.RECORDING),
        (DaqState.RECORDING, DaqState.IDLE),
        (DaqState.ERROR, DaqState.STARTED),
        (DaqState.FILE_SAVED, DaqState.STARTED),
        (DaqState.SAVING_FILE, DaqState.STOP),
        (DaqState.IDLE, DaqState.ERROR),
    ],
)
def test_other_moves_are_refused(current: DaqState, target: DaqState) -> None:
    with pytest.raises(TransitionError, match=f"{current} -> {target}"):
        check_move(current, target)


def test_only_idle_accepts_a_start() -> None:
    assert [state for state in DaqState if accepts_start(state)] == [DaqState.IDLE]
    assert not is_stoppable(DaqState.IDLE)
    assert not is_stoppable(DaqState.SAVING_FILE)
