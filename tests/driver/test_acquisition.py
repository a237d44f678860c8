"""Dealing images round-robin, counting gaps, and what writers report."""

from __future__ import annotations

import pytest

from stddaq_common.bus.driver_writer import WriterEvent
from stddaq_driver.acquisition import (
    Acquisition,
    AcquisitionPlan,
    IdsWentBackwards,
    ImageDealer,
    WriterTracker,
    images_per_writer,
)
from stddaq_driver.state import DaqState
from stddaq_driver.status_board import AcquisitionSnapshot


def test_round_robin_positions() -> None:
    dealer = ImageDealer(acquisition_id=7, n_writers=3, n_image=None)
    dealt = [dealer.deal(image_id) for image_id in range(100, 107)]
    assert [(writer, (7, index)) for writer, index in dealt] == [  # type: ignore[misc]
        (0, (7, 0)), (1, (7, 0)), (2, (7, 0)),
        (0, (7, 1)), (1, (7, 1)), (2, (7, 1)),
        (0, (7, 2)),
    ]
    assert dealer.per_writer() == [3, 2, 2]
    assert (dealer.first_id, dealer.last_id, dealer.id_gaps) == (100, 106, 0)


def test_gaps_are_counted_and_repeats_skipped() -> None:
    dealer = ImageDealer(1, 2, None)
    assert dealer.deal(10) is not None
    assert dealer.deal(13) is not None
    assert dealer.deal(13) is None
    assert dealer.deal(20) is not None
    assert (dealer.dealt, dealer.id_gaps, dealer.repeated_ids) == (3, 2 + 6, 1)


def test_ids_going_backwards_stop_the_acquisition() -> None:
    dealer = ImageDealer(1, 1, None)
    dealer.deal(50)
    with pytest.raises(IdsWentBackwards, match="3 after 50"):
        dealer.deal(3)


def test_n_image_counts_images_dealt_not_ids() -> None:
    dealer = ImageDealer(1, 2, n_image=3)
    for image_id in (1, 5, 9):
        assert not dealer.is_complete
        dealer.deal(image_id)
    assert dealer.is_complete
    assert dealer.id_gaps == 6


@pytest.mark.parametrize(
    ("dealt", "writers", "expected"),
    [(0, 3, [0, 0, 0]), (1, 3, [1, 0, 0]), (5, 2, [3, 2]), (9, 3, [3, 3, 3]), (7, 1, [7])],
)
def test_images_per_writer(dealt: int, writers: int, expected: list[int]) -> None:
    assert images_per_writer(dealt, writers) == expected
    assert sum(expected) == dealt


def test_tracker_takes_cumulative_counts_and_keeps_errors() -> None:
    tracker = WriterTracker(1)
    tracker.apply(WriterEvent(writer=1, event="file_created", acq_id=1))
    assert tracker.state == "file_created"
    tracker.apply(WriterEvent(1, "progress", 1, written=5, missing=1, missing_ids=(7,), bytes_written=50))
    tracker.apply(WriterEvent(1, "progress", 1, written=9, missing=2, missing_ids=(8,), bytes_written=90))
    assert (tracker.written, tracker.not_written, tracker.bytes_written) == (9, 2, 90)
    assert tracker.missing_ids == [7, 8]
    tracker.apply(WriterEvent(1, "error", 1, reason="No space left on device"))
    assert tracker.state == "error"
    assert tracker.last_error == "No space left on device"


def _plan(n_writers: int) -> AcquisitionPlan:
    return AcquisitionPlan(
        acquisition_id=4, path="/data/run", file_prefix="scan", n_image=None, uid=0,
        compression="none", n_writers=n_writers, detector="det", config={}, started_at=1.0,
    )


def test_plan_files() -> None:
    assert _plan(1).files == ("/data/run/scan0.h5",)
    assert _plan(1).master_file is None
    assert _plan(3).files == ("/data/run/scan0.h5", "/data/run/scan1.h5", "/data/run/scan2.h5")
    assert _plan(3).master_file == "/data/run/scan.h5"


def test_snapshot_sums_the_writers() -> None:
    acquisition = Acquisition(_plan(2))
    for image_id in (1, 2, 4):
        acquisition.dealer.deal(image_id)
    acquisition.writers[0].apply(WriterEvent(0, "progress", 4, written=2, bytes_written=20))
    acquisition.writers[1].apply(
        WriterEvent(1, "progress", 4, written=0, missing=1, missing_ids=(2,), bytes_written=0)
    )
    snapshot = acquisition.snapshot(AcquisitionSnapshot(state=DaqState.RECORDING))
    assert snapshot.state is DaqState.RECORDING
    assert (snapshot.images_dealt, snapshot.images_written, snapshot.bytes_written) == (3, 2, 20)
    assert (snapshot.id_gaps, snapshot.images_not_written, snapshot.images_missing) == (1, 1, 2)
    assert snapshot.missing_ids == (2,)
    assert snapshot.files == ("/data/run/scan0.h5", "/data/run/scan1.h5")
