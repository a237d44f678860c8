"""The master file: interleaved virtual datasets over the writer files."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from stddaq_common.bus.metadata import PcoInfo
from stddaq_common.wire.compression import bitshuffle_lz4_compress
from stddaq_writer.h5_layout import FileSpec, image_columns
from stddaq_writer.image_file import ImageFile
from stddaq_writer.master_file import MasterFileError, build_master_file, interleaved_length
from tests.writer.frames import frame
from tests.writer.readback import h5dump_value

H, W = 4, 5


def write_set(directory: Path, counts: list[int], compression: str = "none") -> list[str]:
    """Writer files as a round-robin deal makes them: entry j in file j % N at j // N."""
    n = len(counts)
    paths = []
    for k, count in enumerate(counts):
        spec = FileSpec("CAM", "pco", H, W, np.dtype("<u2"), compression, image_columns("pco"))  # type: ignore[arg-type]
        path = str(directory / f"file{k}.h5")
        image_file = ImageFile.create(path, spec)
        for index in range(count):
            entry = index * n + k
            image = frame(1000 + entry, H, W)
            compressed = compression != "none"
            image_file.write_chunk(index, bitshuffle_lz4_compress(image) if compressed else image)
            image_file.record_written(index, 1000 + entry, 1, PcoInfo(1, entry, ""))
        image_file.close(count)
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    "counts",
    [[5], [4, 3, 3], [4, 4, 4], [1, 0, 0], [3, 1, 2], [0, 2]],
    ids=["one-file", "last-files-short", "even", "one-image", "writer-stopped-early", "first-empty"],
)
def test_entry_j_is_image_j_div_n_of_file_j_mod_n(tmp_path: Path, counts: list[int]) -> None:
    paths = write_set(tmp_path, counts)
    master = str(tmp_path / "file.h5")
    summary = build_master_file(master, "CAM", paths)
    n = len(counts)
    length = interleaved_length(counts)
    assert summary.n_entries == length and summary.images_per_file == counts
    with h5py.File(master, "r") as h5:
        data, records = h5["CAM/data"], h5["CAM/metadata"][:]
        assert data.shape == (length, H, W) and len(records) == length
        timestamps = h5["CAM/timestamp"][:]
        for j in range(length):
            if j // n < counts[j % n]:
                assert (records[j]["image_id"], records[j]["status"]) == (1000 + j, 1)
                np.testing.assert_array_equal(data[j], frame(1000 + j, H, W))
                assert timestamps[j] == 1_000_000_000 + j
            else:
                assert records[j]["status"] == 0 and not data[j].any()
        assert h5["CAM"].attrs["n_images"] == length


def test_master_file_is_readable_from_elsewhere_and_by_h5dump(tmp_path: Path) -> None:
    paths = write_set(tmp_path, [3, 2, 2], "bitshuffle_lz4")
    master = tmp_path / "file.h5"
    build_master_file(str(master), "CAM", paths)
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("moved"))
    for path in paths:
        Path(path).unlink()  # only the moved copy remains: relative sources must resolve
    with h5py.File(moved / "file.h5", "r") as h5:
        np.testing.assert_array_equal(h5["CAM/data"][6], frame(1006, H, W))
    if shutil.which("h5dump"):
        value = h5dump_value(str(moved / "file.h5"), "/CAM/data", (6, 1, 2), cwd="/")
        assert value == str(frame(1006, H, W)[1, 2])
        assert h5dump_value(str(moved / "file.h5"), "/CAM/metadata", (5,)).startswith("{")


def test_unreadable_files_raise_unless_skipped(tmp_path: Path) -> None:
    paths = write_set(tmp_path, [2, 2])
    gone = str(tmp_path / "gone.h5")
    with pytest.raises(MasterFileError, match=r"gone\.h5"):
        build_master_file(str(tmp_path / "m.h5"), "CAM", [paths[0], gone])
    summary = build_master_file(str(tmp_path / "m.h5"), "CAM", [paths[0], gone], skip_unreadable=True)
    assert summary.skipped_files == [gone] and summary.n_entries == 3
    with pytest.raises(MasterFileError, match="no /OTHER/data"):
        build_master_file(str(tmp_path / "m2.h5"), "OTHER", paths)
    with pytest.raises(MasterFileError, match="cannot write"):
        build_master_file(str(tmp_path / "m.h5"), "CAM", paths)  # exists: not overwritten


def test_files_of_different_shapes_are_refused(tmp_path: Path) -> None:
    first = write_set(tmp_path, [2])[0]
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    spec = FileSpec("CAM", "pco", H + 1, W, np.dtype("<u2"), "none", image_columns("pco"))
    other = str(other_dir / "file1.h5")
    ImageFile.create(other, spec).close(0)
    with pytest.raises(MasterFileError, match="shape"):
        build_master_file(str(tmp_path / "m.h5"), "CAM", [first, other])
