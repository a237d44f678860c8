"""The status board: atomic start claim, state history, listeners, writer liveness."""

from __future__ import annotations

from dataclasses import replace

import pytest

from stddaq_driver.state import DaqState, TransitionError
from stddaq_driver.status_board import AcquisitionSnapshot, Busy, StatusBoard


def test_begin_claims_only_when_idle() -> None:
    board = StatusBoard(n_writers=1)
    first = board.begin(AcquisitionSnapshot(state=DaqState.STARTED))
    assert first.acquisition_id == 1
    with pytest.raises(Busy, match="state started"):
        board.begin(AcquisitionSnapshot(state=DaqState.STARTED))


def test_history_keeps_every_state_change() -> None:
    board = StatusBoard(n_writers=1)
    version = board.version
    seen: list[int] = []
    board.add_listener(lambda: seen.append(1))
    snapshot = board.begin(AcquisitionSnapshot(state=DaqState.STARTED))
    for state in (DaqState.CREATING_FILE, DaqState.ERROR, DaqState.IDLE):
        snapshot = replace(snapshot, state=state)
        board.move_to(snapshot)
    board.update(replace(snapshot, images_dealt=5))
    latest, changes = board.changes_since(version)
    assert [change.state for change in changes] == [
        DaqState.STARTED, DaqState.CREATING_FILE, DaqState.ERROR, DaqState.IDLE,
    ]
    assert latest == version + 4
    assert len(seen) == 4
    assert board.snapshot().images_dealt == 5
    assert board.changes_since(latest) == (latest, [])


def test_bad_moves_and_updates_are_refused() -> None:
    board = StatusBoard(n_writers=1)
    with pytest.raises(TransitionError):
        board.move_to(AcquisitionSnapshot(state=DaqState.RECORDING))
    with pytest.raises(ValueError, match="update"):
        board.update(AcquisitionSnapshot(state=DaqState.RECORDING))


def test_writer_liveness() -> None:
    board = StatusBoard(n_writers=2)
    assert board.silent_writers(now=100.0) == [0, 1]
    board.writer_heard(1, now=99.0)
    assert board.silent_writers(now=100.0) == [0]
    assert board.writer_ages(now=100.0) == [None, 1.0]
    assert board.silent_writers(now=110.0) == [0, 1]
    board.set_writer_count(1)
    assert len(board.snapshot().writers) == 1
