"""O_DIRECT image writes (stddaq_writer.direct_io via ImageFile): real files, read back."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from stddaq_common.bus.metadata import PcoInfo
from stddaq_common.ring.geometry import RingGeometry
from stddaq_common.ring.image_ring import ImageRing, SlotView
from stddaq_writer.chunk_writer import ChunkWriter, Outcome
from stddaq_writer.h5_layout import FileSpec, image_columns
from stddaq_writer.image_file import ImageFile
from tests.writer.frames import frame, meta_of
from tests.writer.readback import check_file, h5dump_value
from tests.writer.test_file_layer import needs_h5dump

H, W = 128, 256
"""64 KiB images: the smallest size written with O_DIRECT."""


def spec(height: int = H, width: int = W) -> FileSpec:
    return FileSpec("CAM", "pco", height, width, np.dtype("<u2"), "none", image_columns("pco"))


def aligned(image: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A page-aligned copy (as a ring slot is)."""
    out = np.frombuffer(mmap.mmap(-1, image.nbytes), image.dtype).reshape(image.shape)
    out[:] = image
    return out


def unaligned(image: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A copy starting one byte past a page boundary (O_DIRECT cannot write it)."""
    raw = np.frombuffer(mmap.mmap(-1, image.nbytes + 4096), np.uint8)[1 : 1 + image.nbytes]
    out = raw.view(image.dtype).reshape(image.shape)
    out[:] = image
    return out


def detail(image_id: int) -> PcoInfo:
    return PcoInfo(1_700_000_000 + image_id, image_id, "x")


def test_images_go_out_with_o_direct_and_read_back_exactly(tmp_path: Path) -> None:
    """Written, missing, torn (cleared), out of order, unaligned and a short tail: every
    image pixel-exact where written, zeros with status 0 elsewhere, in the usual layout."""
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec(), direct_io=True)
    assert image_file.direct_io
    expected: list[int | None] = []
    for index in range(40):
        image_id = 100 + index
        if index == 5:
            image_file.record_missing(index, image_id)
            expected.append(None)
            continue
        buffer = unaligned if index == 9 else aligned
        image_file.write_chunk(index, buffer(frame(image_id, H, W)))
        if index == 7:  # torn: the writer clears it and records it missing
            image_file.clear_chunk(index)
            image_file.record_missing(index, image_id)
            expected.append(None)
            continue
        image_file.record_written(index, image_id, 1, detail(image_id))
        expected.append(image_id)
    for index in (42, 40, 41):  # out of order
        image_file.write_chunk(index, aligned(frame(100 + index, H, W)))
        image_file.record_written(index, 100 + index, 1, detail(100 + index))
    expected += [140, 141, 142, None, None]
    assert image_file.direct_writes == 41  # all but the unaligned one
    summary = image_file.close(45)
    assert (summary.n_images, summary.n_written, summary.n_missing) == (45, 41, 4)
    with h5py.File(path, "r") as h5:
        records = h5["CAM/metadata"][:]
        data = h5["CAM/data"]
        for index, image_id in enumerate(expected):
            if image_id is None:
                assert records["status"][index] == 0
                assert not data[index].any(), f"missing image at {index} is not zeros"
            else:
                assert records["image_id"][index] == image_id
                np.testing.assert_array_equal(data[index], frame(image_id, H, W))
        assert (data.shape, data.maxshape, data.chunks, data.fillvalue) == (
            (45, H, W), (None, H, W), (1, H, W), 0)


def test_a_long_file_derives_every_offset_right(tmp_path: Path) -> None:
    """3000 images with flushes in between (records allocated among the chunks): every
    chunk is where HDF5's index says and holds its image."""
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec(), direct_io=True)
    base = aligned(frame(0, H, W))
    for index in range(3000):
        base[0, :4] = np.frombuffer(np.int64(index).tobytes(), "<u2")  # id in the first pixels
        image_file.write_chunk(index, base)
        image_file.record_written(index, index, 1, detail(index))
        if index % 97 == 0:
            image_file.flush()
    assert image_file.direct_writes == 3000
    image_file.close(3000)
    with h5py.File(path, "r") as h5:
        data = h5["CAM/data"]
        firsts = data[:, 0, :4].copy().view("<i8").ravel()
        assert firsts.tolist() == list(range(3000))
        assert (data[2999, 1:] == base[1:]).all()


def test_the_file_is_the_same_for_readers_as_a_buffered_one(tmp_path: Path) -> None:
    """check_file (layout, pixels, records, timestamps) and h5dump 1.10 on a direct file."""
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec(), direct_io=True)
    for index, image_id in enumerate([3, 4, 5]):
        image_file.write_chunk(index, aligned(frame(image_id, H, W)))
        image_file.record_written(index, image_id, 1, PcoInfo(1_700_000_000 + image_id, image_id, "x"))
    image_file.close(3)
    check_file(path, "CAM", [3, 4, 5], H, W)


@needs_h5dump
def test_h5dump_reads_a_direct_file(tmp_path: Path) -> None:
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec(), direct_io=True)
    image_file.write_chunk(0, aligned(frame(8, H, W)))
    image_file.record_written(0, 8, 1, detail(8))
    image_file.close(1)
    assert h5dump_value(path, "/CAM/data", (0, 2, 3)) == str(frame(8, H, W)[2, 3])


_SWMR_READER = """
import sys, h5py
with h5py.File(sys.argv[1], "r", swmr=True) as h5:
    data = h5["CAM/data"]
    sys.stdin.readline()
    data.refresh()
    print(data.shape[0], int(data[data.shape[0] - 1][0, 1]), flush=True)
"""


def test_a_swmr_reader_sees_images_written_with_o_direct(tmp_path: Path) -> None:
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec(), direct_io=True)
    image_file.write_chunk(0, aligned(frame(0, H, W)))
    image_file.record_written(0, 0, 1, detail(0))
    image_file.flush()
    reader = subprocess.Popen([sys.executable, "-c", _SWMR_READER, path],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdin is not None and reader.stdout is not None
        for index in (1, 2):
            image_file.write_chunk(index, aligned(frame(index, H, W)))
            image_file.record_written(index, index, 1, detail(index))
        image_file.flush()
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().split() == ["3", str(int(frame(2, H, W)[0, 1]))]
        assert reader.wait(30) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    image_file.close(3)


def test_an_image_size_not_a_multiple_of_4096_goes_out_as_head_and_tail(tmp_path: Path) -> None:
    """129 x 256 x 2 = 16 x 4096 + 512 bytes: the head with O_DIRECT, the tail buffered;
    slots at multiples of that size (512-aligned) included; missing images read as zeros."""
    height = H + 1
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec(height, W), direct_io=True)
    assert image_file.direct_io
    ring = np.frombuffer(mmap.mmap(-1, 8 * height * W * 2), "<u2").reshape(8, height, W)
    for index in range(8):
        if index == 3:
            image_file.record_missing(index, index)
            continue
        ring[index] = frame(index, height, W)
        image_file.write_chunk(index, ring[index])
        image_file.record_written(index, index, 1, detail(index))
    assert image_file.direct_writes >= 1  # slot 0 is page-aligned; the others need 512-byte DIO
    image_file.close(8)
    check_file(path, "CAM", [0, 1, 2, None, 4, 5, 6, 7], height, W)


@pytest.mark.parametrize(("height", "width"), [(100, 100), (16, 256)])
def test_images_o_direct_cannot_take_go_through_hdf5(tmp_path: Path, height: int, width: int) -> None:
    """20,000 and 8 KiB bytes (too small for O_DIRECT): the buffered path."""
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec(height, width), direct_io=True)
    assert not image_file.direct_io
    image_file.write_chunk(0, aligned(frame(1, height, width)))
    image_file.record_written(0, 1, 1, detail(1))
    image_file.close(1)
    with h5py.File(path, "r") as h5:
        np.testing.assert_array_equal(h5["CAM/data"][0], frame(1, height, width))


class LappingRing:
    """A real ring whose slot is overwritten right after the writer took its view (the
    producer lapping a slow writer mid-write)."""

    def __init__(self, ring: ImageRing, n_slots: int) -> None:
        self.ring = ring
        self.n_slots = n_slots

    def view(self, image_id: int) -> SlotView | None:
        slot = self.ring.view(image_id)
        self.ring.write(image_id + self.n_slots, frame(image_id + self.n_slots, H, W))
        return slot

    def read_into(self, image_id: int, out: Any) -> int | None:
        self.ring.write(image_id + self.n_slots, frame(image_id + self.n_slots, H, W))
        return self.ring.read_into(image_id, out)


@pytest.mark.parametrize("read_mode", ["view", "copy"])
def test_a_slot_lapped_during_an_o_direct_write_leaves_zeros(tmp_path: Path, read_mode: Any) -> None:
    """From a real ring (page-aligned 64 KiB slots): good images exact with O_DIRECT, the
    lapped one recorded missing and zeros in the file, never the later image."""
    n_slots = 4
    name = f"wtest-direct-{uuid.uuid4().hex[:8]}"
    with ImageRing.create(name, RingGeometry(slot_bytes=H * W * 2, n_slots=n_slots)) as ring:
        image_file = ImageFile.create(str(tmp_path / "f0.h5"), spec(), direct_io=True)
        for image_id in range(3):
            ring.write(image_id, frame(image_id, H, W))
        good = ChunkWriter(ring, image_file, read_mode)
        assert good.write_image(0, meta_of(0, H, W)) is Outcome.WRITTEN
        lapping = ChunkWriter(LappingRing(ring, n_slots), image_file, read_mode)
        assert lapping.write_image(1, meta_of(1, H, W)) in (Outcome.TORN, Outcome.OVERWRITTEN)
        assert good.write_image(2, meta_of(2, H, W)) is Outcome.WRITTEN
        assert image_file.direct_writes >= 2
        image_file.close(3)
    check_file(str(tmp_path / "f0.h5"), "CAM", [0, None, 2], H, W)


class LapsSome:
    """A real ring where the images in `lapped` have their slot overwritten right after the
    writer took its view (the producer lapping a slow writer in the middle of a batch)."""

    def __init__(self, ring: ImageRing, n_slots: int, lapped: set[int]) -> None:
        self.ring = ring
        self.n_slots = n_slots
        self.lapped = lapped

    def view(self, image_id: int) -> SlotView | None:
        slot = self.ring.view(image_id)
        if image_id in self.lapped:
            self.ring.write(image_id + self.n_slots, frame(image_id + self.n_slots, H, W))
        return slot

    def read_into(self, image_id: int, out: Any) -> int | None:
        return self.ring.read_into(image_id, out)


def test_a_batch_goes_out_in_gathered_writes_and_a_lapped_slot_in_it_leaves_zeros(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of images (RecordImages) from a real ring: chunks that follow each other in
    the file go out in one pwritev; a slot lapped during it is recorded missing with zeros
    in the file, one overwritten before is missing too, every other image is exact."""
    n_slots = 16
    calls: list[int] = []
    pwritev = os.pwritev

    def counting_pwritev(fd: int, buffers: Any, offset: int) -> int:
        calls.append(len(buffers))
        return pwritev(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", counting_pwritev)
    name = f"wtest-batch-{uuid.uuid4().hex[:8]}"
    path = str(tmp_path / "f0.h5")
    with ImageRing.create(name, RingGeometry(slot_bytes=H * W * 2, n_slots=n_slots)) as ring:
        image_file = ImageFile.create(path, spec(), direct_io=True)
        image_file.set_block(1000)  # blocks of 8 chunks: a batch's chunks follow each other
        for image_id in range(n_slots):
            ring.write(image_id, frame(image_id, H, W))
        writer = ChunkWriter(LapsSome(ring, n_slots, {6}), image_file)
        missing: list[int] = []
        writer.write_images(0, [meta_of(i, H, W) for i in range(4)], missing)
        ring.write(n_slots + 8, frame(n_slots + 8, H, W))  # id 8's slot now holds a later id
        writer.write_images(4, [meta_of(i, H, W) for i in range(4, 12)], missing)
        assert missing == [6, 8]
        counts = writer.counts
        assert (counts.written, counts.torn, counts.overwritten) == (10, 1, 1)
        # The first batch of a file goes one image at a time (its images' metadata is
        # checked first); the second in two gathered writes, around the overwritten id 8.
        assert calls == [4, 3]
        image_file.close(12)
    expected: list[int | None] = list(range(12))
    expected[6] = expected[8] = None
    check_file(path, "CAM", expected, H, W)


_SWMR_FOLLOWER = """
import sys, h5py
with h5py.File(sys.argv[1], "r", swmr=True) as h5:
    data, metadata = h5["CAM/data"], h5["CAM/metadata"]
    for line in sys.stdin:
        data.refresh(); metadata.refresh()
        n = data.shape[0]
        last = int(data[n - 1][0, 1]) if n else -1
        print(n, metadata.shape[0], last, flush=True)
"""


def test_data_grows_by_blocks_and_readers_see_exactly_what_is_written(tmp_path: Path) -> None:
    """Blocks of 8 chunks per growth: a flush asked for mid-block waits for the block
    boundary; a SWMR reader sees `data` and `metadata` with exactly the images written,
    the last one being the last image (never a chunk allocated ahead); a forced flush and
    the close drop the chunks allocated ahead; every chunk is where the index says."""
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec(), direct_io=True)
    image_file.set_block(1000.0)
    assert image_file.block == 8

    def write(index: int) -> None:
        image_file.write_chunk(index, aligned(frame(index, H, W)))
        image_file.record_written(index, index, 1, detail(index))

    def seen() -> list[int]:
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write("\n")
        reader.stdin.flush()
        return [int(word) for word in reader.stdout.readline().split()]

    write(0)
    assert image_file.flush_when_aligned() is False  # 1 of 8 chunks used: waits
    reader = subprocess.Popen([sys.executable, "-c", _SWMR_FOLLOWER, path],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert seen() == [0, 0, -1]  # nothing flushed yet
        for index in range(1, 8):
            write(index)
        assert seen() == [0, 0, -1]  # the block is full but nothing grew yet
        write(8)  # the next growth flushes first, at the boundary
        assert image_file.flushes == 1
        assert seen() == [8, 8, int(frame(7, H, W)[0, 1])]
        for index in range(9, 12):
            write(index)
        image_file.flush()  # forced mid-block: the 4 chunks allocated ahead are dropped
        assert seen() == [12, 12, int(frame(11, H, W)[0, 1])]
        for index in range(12, 19):
            write(index)
        assert image_file.flush_when_aligned() is False
        summary = image_file.close(19)
        assert seen() == [19, 19, int(frame(18, H, W)[0, 1])]
    finally:
        if reader.stdin is not None:
            reader.stdin.close()
        assert reader.wait(30) == 0
    assert (summary.n_images, summary.n_written) == (19, 19)
    assert image_file.direct_writes == 19
    with h5py.File(path, "r") as h5:
        data = h5["CAM/data"]
        assert data.shape == (19, H, W)
        assert data.id.get_num_chunks() == 19
        assert h5["CAM/metadata"]["image_id"].tolist() == list(range(19))
        for index in range(19):
            np.testing.assert_array_equal(data[index], frame(index, H, W))


def test_a_long_file_grown_by_blocks_derives_every_offset_right(tmp_path: Path) -> None:
    """2000 images grown 8 chunks at a time, flushes asked for every 97 images: every
    chunk holds its image, the index lists exactly 2000 chunks, each where it was derived."""
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec(), direct_io=True)
    image_file.set_block(1000.0)
    base = aligned(frame(0, H, W))
    for index in range(2000):
        base[0, :4] = np.frombuffer(np.int64(index).tobytes(), "<u2")
        image_file.write_chunk(index, base)
        image_file.record_written(index, index, 1, detail(index))
        if index % 97 == 0:
            image_file.flush_when_aligned()
    assert image_file.direct_writes == 2000
    derived = list(image_file._offsets)
    image_file.close(2000)
    with h5py.File(path, "r") as h5:
        data = h5["CAM/data"]
        assert data.shape[0] == 2000 and data.id.get_num_chunks() == 2000
        firsts = data[:, 0, :4].copy().view("<i8").ravel()
        assert firsts.tolist() == list(range(2000))
        for index in (0, 1, 7, 8, 9, 1023, 1024, 1999):
            assert data.id.get_chunk_info_by_coord((index, 0, 0)).byte_offset == derived[index]


def test_an_acquisition_stopped_mid_block_closes_with_the_exact_extent(tmp_path: Path) -> None:
    """Closed with fewer images than allocated (and with a missing tail): `data` has
    exactly n_images, the tail reads as zeros with status 0."""
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec(), direct_io=True)
    image_file.set_block(1000.0)
    for index in range(3):
        image_file.write_chunk(index, aligned(frame(index, H, W)))
        image_file.record_written(index, index, 1, detail(index))
    summary = image_file.close(5)
    assert (summary.n_images, summary.n_written, summary.n_missing) == (5, 3, 2)
    with h5py.File(path, "r") as h5:
        data = h5["CAM/data"]
        assert data.shape == (5, H, W)
        assert h5["CAM/metadata"]["status"].tolist() == [1, 1, 1, 0, 0]
        assert not data[3:].any()
        np.testing.assert_array_equal(data[2], frame(2, H, W))


def test_the_timed_flush_waits_for_a_block_boundary_unless_overdue(tmp_path: Path) -> None:
    """Acquisition.timed_flush: each sizes the blocks from the rate since the last; one asked
    for mid-block is done by the next growth (counted once); a forced one drops the chunks
    allocated ahead; the `flushed` count follows every flush."""
    from stddaq_common.bus.driver_writer import CreateCommand
    from stddaq_common.bus.metadata import Dtype, ImageMeta
    from stddaq_writer.acquisition import Acquisition

    name = f"t{uuid.uuid4().hex[:10]}-image"
    with ImageRing.create(name, RingGeometry(slot_bytes=H * W * 2, n_slots=64)) as ring:
        command = CreateCommand(path=str(tmp_path), uid=0, acq_id=7, file=str(tmp_path / "f0.h5"))
        acq = Acquisition(command, spec(), ring, owner=None, read_mode="view", direct_io=True,
                          reserve_bytes=0, daq_config={})

        def write(image_id: int) -> None:
            ring.write(image_id, frame(image_id, H, W))
            meta = ImageMeta(image_id, H, W, H * W * 2, Dtype.UINT16, detail=detail(image_id))
            assert acq.write(image_id, meta) is Outcome.WRITTEN

        write(0)
        assert acq.timed_flush(100.0) is True  # aligned (block 1): flushed now
        assert (acq.flushed, acq.file.block) == (1, 1)
        for image_id in range(1, 41):
            write(image_id)
        assert acq.timed_flush(101.0) is True  # 40 images/s: blocks of 8 from now on
        assert (acq.flushed, acq.file.block) == (41, 8)
        write(41)  # allocates 41..48
        assert acq.timed_flush(102.0) is False
        assert acq.timed_flush(102.5) is False  # still waiting: not flushed twice
        for image_id in range(42, 50):
            write(image_id)  # 49 grows the next block: the flush happens first
        assert acq.flushed == 49 and acq.file.flushes == 3
        assert acq.timed_flush(102.6) is True  # reports the flush done at the boundary
        write(50)
        assert acq.timed_flush(104.0, force=True) is True
        assert acq.flushed == 51 and acq.file.extent == 51
        with h5py.File(str(tmp_path / "f0.h5"), "r", swmr=True) as h5:
            assert h5["CAM/data"].shape[0] == 51 and h5["CAM/metadata"].shape[0] == 51
        summary = acq.close(51)
    assert (summary.n_images, summary.n_written) == (51, 51)
    check_file(str(tmp_path / "f0.h5"), "CAM", list(range(51)), H, W)
