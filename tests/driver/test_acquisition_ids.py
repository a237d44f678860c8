"""Acquisition ids go on across driver restarts with --state-dir, and never start low."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from stddaq_driver.acquisition_ids import AcquisitionIdStore
from stddaq_driver.service import keep_acquisition_ids
from stddaq_driver.state import DaqState
from stddaq_driver.status_board import AcquisitionSnapshot, StatusBoard


def run_one(board: StatusBoard) -> int:
    """Claim an acquisition and bring the board back to idle; its id."""
    stored = board.begin(AcquisitionSnapshot(state=DaqState.STARTED))
    board.move_to(replace(stored, state=DaqState.ERROR))
    board.move_to(replace(board.snapshot(), state=DaqState.IDLE))
    return stored.acquisition_id


def test_a_restarted_driver_numbers_on_from_the_kept_id(tmp_path: Path) -> None:
    before = int(time.time())
    first_board = StatusBoard(1)
    keep_acquisition_ids(first_board, AcquisitionIdStore(str(tmp_path), "det"))
    ids = [run_one(first_board) for _ in range(3)]
    assert ids[0] >= before, "without a kept id the ids start at the Unix time"
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
    assert (tmp_path / "det.last-acquisition-id").read_text() == f"{ids[2]}\n"

    second_board = StatusBoard(1)  # the driver restarted
    keep_acquisition_ids(second_board, AcquisitionIdStore(str(tmp_path), "det"))
    assert second_board.snapshot().acquisition_id == ids[2]
    assert run_one(second_board) == ids[2] + 1


def test_an_unreadable_id_file_falls_back_to_the_time(tmp_path: Path) -> None:
    (tmp_path / "det.last-acquisition-id").write_text("garbage\n")
    store = AcquisitionIdStore(str(tmp_path), "det")
    assert store.last() >= int(time.time()) - 2
    store.remember(7)
    assert AcquisitionIdStore(str(tmp_path), "det").last() == 7


def test_a_folder_that_cannot_be_written_loses_no_acquisition(tmp_path: Path) -> None:
    board = StatusBoard(1)
    keep_acquisition_ids(board, AcquisitionIdStore(str(tmp_path / "missing"), "det"))
    first = run_one(board)
    assert run_one(board) == first + 1
