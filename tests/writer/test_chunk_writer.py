"""From slot to chunk: a slot overwritten before or during its write never becomes a wrong
image in the file (real ring, in-process)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from stddaq_common.bus.metadata import Dtype
from stddaq_common.ring.geometry import RingGeometry
from stddaq_common.ring.image_ring import ImageRing, SlotView
from stddaq_writer.chunk_writer import ChunkWriter, Outcome
from stddaq_writer.h5_layout import FileSpec, image_columns
from stddaq_writer.image_file import ImageFile
from tests.writer.frames import compressed_frame, frame, meta_of

H, W = 8, 16
N_SLOTS = 4


class OverwritingRing:
    """A real ring whose slot is overwritten right after the writer took its view or
    copied it: what happens when the producer laps a slow writer mid-write."""

    def __init__(self, ring: ImageRing, compressed: bool) -> None:
        self.ring = ring
        self.compressed = compressed

    def _lap(self, image_id: int) -> None:
        later = image_id + N_SLOTS
        data = compressed_frame(later, H, W) if self.compressed else frame(later, H, W)
        self.ring.write(later, data)

    def view(self, image_id: int) -> SlotView | None:
        slot = self.ring.view(image_id)
        self._lap(image_id)
        return slot

    def read_into(self, image_id: int, out: Any) -> int | None:
        self._lap(image_id)
        return self.ring.read_into(image_id, out)


@pytest.fixture
def ring() -> Iterator[ImageRing]:
    name = f"wtest-chunk-{os.getpid()}"
    geometry = RingGeometry(slot_bytes=H * W * 2 + 1024, n_slots=N_SLOTS)
    with ImageRing.create(name, geometry) as owned:
        yield owned


def open_file(tmp_path: Path, compression: Any) -> ImageFile:
    spec = FileSpec("CAM", "pco", H, W, np.dtype("<u2"), compression, image_columns("pco"))
    return ImageFile.create(str(tmp_path / "f0.h5"), spec)


CASES = [
    ("none", "view", False),
    ("none", "copy", False),
    ("bitshuffle_lz4", "view", False),
    ("bitshuffle_lz4", "view", True),
    ("none", "view", True),
]


@pytest.mark.parametrize(("compression", "read_mode", "compressed_slot"), CASES)
def test_slot_overwritten_during_the_write_is_recorded_missing(
    ring: ImageRing, tmp_path: Path, compression: Any, read_mode: Any, compressed_slot: bool
) -> None:
    image_file = open_file(tmp_path, compression)
    for image_id in range(3):
        ring.write(image_id, compressed_frame(image_id, H, W) if compressed_slot else frame(image_id, H, W))
    good = ChunkWriter(ring, image_file, read_mode)
    metas = [meta_of(i, H, W, compressed_slot=compressed_slot) for i in range(3)]
    assert good.write_image(0, metas[0]) is Outcome.WRITTEN
    lapping = ChunkWriter(OverwritingRing(ring, compressed_slot), image_file, read_mode)
    outcome = lapping.write_image(1, metas[1])
    assert outcome in (Outcome.TORN, Outcome.OVERWRITTEN)
    assert lapping.counts.missing == 1
    assert good.write_image(2, metas[2]) is Outcome.WRITTEN
    image_file.close(3)
    with h5py.File(image_file.path, "r") as h5:
        records = h5["CAM/metadata"][:]
        assert records["status"].tolist() == [1, 0, 1]
        assert records["image_id"].tolist() == [0, 1, 2]
        data = h5["CAM/data"][:]
    np.testing.assert_array_equal(data[0], frame(0, H, W))
    assert not data[1].any(), "a lapped slot must not leave its (wrong) image in the file"
    np.testing.assert_array_equal(data[2], frame(2, H, W))


def test_images_overwritten_before_the_writer_came_are_missing(ring: ImageRing, tmp_path: Path) -> None:
    image_file = open_file(tmp_path, "none")
    for image_id in range(N_SLOTS + 1):  # id 0 is overwritten by id N_SLOTS
        ring.write(image_id, frame(image_id, H, W))
    writer = ChunkWriter(ring, image_file)
    assert writer.write_image(0, meta_of(0, H, W)) is Outcome.OVERWRITTEN
    assert writer.write_image(1, meta_of(N_SLOTS, H, W)) is Outcome.WRITTEN
    assert writer.write_image(2, meta_of(N_SLOTS + 7, H, W)) is Outcome.OVERWRITTEN  # never written
    assert (writer.counts.written, writer.counts.overwritten) == (1, 2)
    image_file.close(3)


@pytest.mark.parametrize(
    "change",
    [{"height": H + 1}, {"dtype": Dtype.UINT32}, {"size": 5}, {"dtype": Dtype.UNKNOWN}],
    ids=["height", "dtype", "size", "unknown-dtype"],
)
def test_metadata_that_does_not_fit_the_file_is_rejected(
    ring: ImageRing, tmp_path: Path, change: dict[str, Any]
) -> None:
    image_file = open_file(tmp_path, "none")
    ring.write(0, frame(0, H, W))
    meta = meta_of(0, H, W)
    for key, value in change.items():
        setattr(meta, key, value)
    writer = ChunkWriter(ring, image_file)
    assert writer.write_image(0, meta) is Outcome.REJECTED
    summary = image_file.close(1)
    assert (summary.n_written, summary.n_missing) == (0, 1)


def test_a_corrupt_precompressed_slot_is_rejected_not_written(ring: ImageRing, tmp_path: Path) -> None:
    image_file = open_file(tmp_path, "bitshuffle_lz4")
    ring.write(0, b"\x00" * 20)
    meta = meta_of(0, H, W, compressed_slot=True)
    meta.size = 20
    writer = ChunkWriter(ring, image_file)
    assert writer.write_image(0, meta) is Outcome.REJECTED
    image_file.close(1)
