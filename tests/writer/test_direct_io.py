"""Uncompressed images written with O_DIRECT: pixel-exact, missing and torn images read as
zeros, unaligned buffers and file systems without O_DIRECT fall back to HDF5 (real ring,
real files, read back with h5py and h5dump)."""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from stddaq_common.geometry import RingGeometry
from stddaq_common.ring import ImageRing
from stddaq_writer import direct_io
from stddaq_writer.chunk_writer import ChunkWriter, Outcome
from stddaq_writer.h5_layout import FileSpec, image_columns
from stddaq_writer.image_file import ImageFile
from tests.writer.frames import frame, meta_of
from tests.writer.readback import h5dump_value
from tests.writer.test_chunk_writer import OverwritingRing

H, W = 256, 256  # 128 KiB images: large and aligned enough for O_DIRECT
N_SLOTS = 8


@pytest.fixture
def ring(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImageRing]:
    monkeypatch.setattr("tests.writer.test_chunk_writer.N_SLOTS", N_SLOTS)
    monkeypatch.setattr("tests.writer.test_chunk_writer.H", H)
    monkeypatch.setattr("tests.writer.test_chunk_writer.W", W)
    geometry = RingGeometry(slot_bytes=H * W * 2, n_slots=N_SLOTS)
    with ImageRing.create(f"wtest-direct-{os.getpid()}", geometry) as owned:
        yield owned


def create(tmp_path: Path, direct_io: bool = True) -> ImageFile:
    spec = FileSpec("CAM", "pco", H, W, np.dtype("<u2"), "none", image_columns("pco"))
    return ImageFile.create(str(tmp_path / "f0.h5"), spec, direct_io=direct_io)


def aligned(image: np.ndarray[Any, Any]) -> mmap.mmap:
    """A page-aligned copy of an image (what a ring slot is)."""
    buffer = mmap.mmap(-1, image.nbytes)
    buffer[:] = image.tobytes()
    return buffer


def read_all(path: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    with h5py.File(path, "r") as h5:
        return h5["CAM/data"][:], h5["CAM/metadata"][:]


def test_images_go_to_disk_with_o_direct_pixel_exact(ring: ImageRing, tmp_path: Path) -> None:
    image_file = create(tmp_path)
    assert image_file.direct_io, "O_DIRECT works on this file system (ext4 / tmpfs >= 6.6)"
    writer = ChunkWriter(ring, image_file)
    for image_id in range(20):
        ring.write(image_id, frame(image_id, H, W))
        assert writer.write_image(image_id, meta_of(image_id, H, W)) is Outcome.WRITTEN
    direct = image_file._direct
    assert direct is not None and (direct.direct_writes, direct.fallback_writes) == (20, 0)
    image_file.close(20)
    data, records = read_all(image_file.path)
    assert records["image_id"].tolist() == list(range(20))
    assert records["status"].tolist() == [1] * 20
    for image_id in range(20):
        np.testing.assert_array_equal(data[image_id], frame(image_id, H, W))
    # an independent reader (HDF5 1.10's h5dump) reads the chunks written past HDF5
    assert h5dump_value(image_file.path, "/CAM/data", (13, 200, 77)) == str(frame(13, H, W)[200, 77])


def test_gaps_torn_images_and_a_short_tail_read_as_zeros(ring: ImageRing, tmp_path: Path) -> None:
    image_file = create(tmp_path)
    writer = ChunkWriter(ring, image_file)
    for image_id in range(3):
        ring.write(image_id, frame(image_id, H, W))
    assert writer.write_image(0, meta_of(0, H, W)) is Outcome.WRITTEN
    lapping = ChunkWriter(OverwritingRing(ring, False), image_file)
    assert lapping.write_image(1, meta_of(1, H, W)) is Outcome.TORN
    ring.write(5, frame(5, H, W))
    assert writer.write_image(3, meta_of(5, H, W)) is Outcome.WRITTEN  # index 2 never comes
    image_file.close(6)  # the driver dealt 6: indices 4 and 5 never arrived
    data, records = read_all(image_file.path)
    assert records["status"].tolist() == [1, 0, 0, 1, 0, 0]
    np.testing.assert_array_equal(data[0], frame(0, H, W))
    np.testing.assert_array_equal(data[3], frame(5, H, W))
    for index in (1, 2, 4, 5):
        assert not data[index].any(), f"image at {index} is missing and must read as zeros"


def test_an_unaligned_buffer_is_written_through_hdf5(tmp_path: Path) -> None:
    image_file = create(tmp_path)
    image = frame(3, H, W)
    storage = np.zeros(image.nbytes + 8, np.uint8)
    unaligned = storage[8:] if storage.ctypes.data % direct_io.ALIGNMENT == 0 else storage[:-8]
    unaligned[:] = image.view(np.uint8).ravel()
    assert unaligned.ctypes.data % direct_io.ALIGNMENT != 0
    image_file.write_chunk(0, unaligned)
    image_file.record_written(0, 3, 1, None)
    direct = image_file._direct
    assert direct is not None and (direct.direct_writes, direct.fallback_writes) == (0, 1)
    image_file.close(1)
    data, _ = read_all(image_file.path)
    np.testing.assert_array_equal(data[0], image)


def test_a_file_system_without_o_direct_means_buffered_writes(
    ring: ImageRing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_direct(path: str, flags: int, *args: Any) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(direct_io.os, "open", no_direct)
    image_file = create(tmp_path)
    assert not image_file.direct_io
    writer = ChunkWriter(ring, image_file)
    ring.write(0, frame(0, H, W))
    assert writer.write_image(1, meta_of(0, H, W)) is Outcome.WRITTEN
    image_file.close(2)
    data, records = read_all(image_file.path)
    assert records["status"].tolist() == [0, 1]
    assert not data[0].any()
    np.testing.assert_array_equal(data[1], frame(0, H, W))


@pytest.mark.parametrize("compression", ["bitshuffle_lz4"])
def test_compressed_files_never_use_o_direct(tmp_path: Path, compression: Any) -> None:
    spec = FileSpec("CAM", "pco", H, W, np.dtype("<u2"), compression, image_columns("pco"))
    image_file = ImageFile.create(str(tmp_path / "c.h5"), spec, direct_io=True)
    assert not image_file.direct_io  # chunk sizes vary: no early allocation possible
    image_file.close(0)


def test_small_images_are_not_worth_o_direct(tmp_path: Path) -> None:
    spec = FileSpec("CAM", "pco", 8, 16, np.dtype("<u2"), "none", image_columns("pco"))
    image_file = ImageFile.create(str(tmp_path / "s.h5"), spec, direct_io=True)
    assert not image_file.direct_io
    image_file.close(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts a tmpfs)")
def test_a_full_disk_is_an_os_error_and_the_images_before_it_stay(tmp_path: Path) -> None:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        reserve = mount_point / "reserve"
        reserve.write_bytes(b"\1" * 512 * 1024)  # room to close the file, given back at the end
        image_file = create(mount_point)
        if not image_file.direct_io:
            image_file.close(0)
            pytest.skip("this kernel's tmpfs refuses O_DIRECT (before Linux 6.6)")
        written = 0
        with pytest.raises(OSError) as failure:
            for index in range(100):  # 12.5 MiB of images into 4 MiB
                image_file.write_chunk(index, aligned(frame(index, H, W)))
                image_file.record_written(index, index, 1, None)
                written += 1
        assert failure.value.errno == errno.ENOSPC
        assert image_file._direct is not None and image_file._direct.fallback_writes == 0
        assert 10 < written < 32
        reserve.unlink()
        image_file.close(written)
        data, records = read_all(image_file.path)
        # the image whose write failed is in the file as missing: status 0 and zeros
        assert records["status"].tolist() == [1] * written + [0]
        for index in range(written):
            np.testing.assert_array_equal(data[index], frame(index, H, W))
        assert not data[written].any()
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
