"""A real writer process takes RecordImages (stddaq's batch of images for one writer): it
says so in its events, and writes each entry at its position, pixel-exact."""

from __future__ import annotations

from pathlib import Path

from stddaq_common.bus.driver_writer import encode_image_batch
from stddaq_common.bus.metadata import encode_image_metadata
from tests.writer.conftest import Daq
from tests.writer.frames import meta_of
from tests.writer.readback import check_file


def test_a_writer_announces_batches_and_writes_each_entry_in_place(
    daq1: Daq, acq_id: int, tmp_path: Path
) -> None:
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
