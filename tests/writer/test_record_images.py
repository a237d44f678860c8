"""A real writer process takes RecordImages (stddaq's batch of images for one writer): it
says so in its events, and writes each entry at its position, pixel-exact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stddaq_common.bus.driver_writer import encode_image_batch
from stddaq_common.bus.metadata import encode_image_metadata
from tests.writer.conftest import Daq
from tests.writer.frames import meta_of
from tests.writer.readback import check_file


@pytest.fixture(scope="module")
def daq_direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daq]:
    """Producer + one writer of 64 KiB images: uncompressed images go out with O_DIRECT, a
    batch's chunks in gathered writes."""
    daq = Daq(tmp_path_factory.mktemp("daqdirect"), 1, height=128, width=256)
    try:
        daq.start_producer()
        daq.start_writers()
    except BaseException:
        daq.close()
        raise
    yield daq
    daq.close()


SIZES = ["small", "direct"]


def _daq(request: pytest.FixtureRequest, size: str) -> Daq:
    daq: Daq = request.getfixturevalue("daq1" if size == "small" else "daq_direct")
    return daq


@pytest.mark.parametrize("size", SIZES)
def test_a_writer_announces_batches_and_writes_each_entry_in_place(
    request: pytest.FixtureRequest, size: str, acq_id: int, tmp_path: Path
) -> None:
    daq1 = _daq(request, size)
    ids = list(range(acq_id * 10_000, acq_id * 10_000 + 50))
    daq1.produce(ids[0], len(ids))
    files = daq1.files(tmp_path)
    daq1.driver.create(acq_id, files)
    (created,) = daq1.driver.wait_all("file_created", acq_id=acq_id)
    assert created["batches"] is True
    metas = [encode_image_metadata(meta_of(i, daq1.height, daq1.width)) for i in ids]
    push = daq1.driver.commands[0]
    push.send(encode_image_batch(metas[:1], acq_id, 0))  # a batch of one is fine too
    push.send(encode_image_batch(metas[1:33], acq_id, 1))
    push.send(encode_image_batch(metas[33:], acq_id, 33))
    daq1.driver.close(acq_id, len(ids))
    (closed,) = daq1.driver.wait_all("closed", acq_id=acq_id)
    assert (closed["written"], closed["missing"]) == (50, 0)
    check_file(files[0], daq1.detector, ids, daq1.height, daq1.width)


@pytest.mark.parametrize("size", SIZES)
def test_a_batch_with_an_entry_that_is_not_imagemetadata_writes_the_others(
    request: pytest.FixtureRequest, size: str, acq_id: int, tmp_path: Path
) -> None:
    """One bad entry in a RecordImages: that position is recorded missing (zeros, status 0),
    every other entry is written in place, and the close counts say so."""
    daq1 = _daq(request, size)
    ids = list(range(acq_id * 10_000, acq_id * 10_000 + 6))
    daq1.produce(ids[0], len(ids))
    files = daq1.files(tmp_path)
    daq1.driver.create(acq_id, files)
    daq1.driver.wait_all("file_created", acq_id=acq_id)
    metas = [encode_image_metadata(meta_of(i, daq1.height, daq1.width)) for i in ids]
    metas[3] = b"\xff\xff\xff"  # not an ImageMetadata message
    push = daq1.driver.commands[0]
    push.send(encode_image_batch(metas[:2], acq_id, 0))
    push.send(encode_image_batch(metas[2:], acq_id, 2))
    daq1.driver.close(acq_id, len(ids))
    (closed,) = daq1.driver.wait_all("closed", acq_id=acq_id)
    assert (closed["written"], closed["missing"]) == (5, 1)
    check_file(files[0], daq1.detector, [*ids[:3], None, *ids[4:]], daq1.height, daq1.width)
