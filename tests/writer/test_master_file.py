"""The master file: interleaved virtual datasets over the writer files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from stddaq_common.bus.metadata import PcoInfo
from stddaq_common.wire.compression import bitshuffle_lz4_compress
from stddaq_writer.crash_repair import clear_status_flags
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


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from stddaq_common.bus.metadata import PcoInfo
from stddaq_writer.h5_layout import FileSpec, image_columns
from stddaq_writer.image_file import ImageFile
from tests.writer.frames import frame
path, k, n, flushed, more = sys.argv[1], *map(int, sys.argv[2:6])
spec = FileSpec("CAM", "pco", 4, 5, np.dtype("<u2"), "none", image_columns("pco"))
image_file = ImageFile.create(path, spec)
for index in range(flushed + more):
    entry = index * n + k
    image_file.write_chunk(index, frame(1000 + entry, 4, 5))
    image_file.record_written(index, 1000 + entry, 1, PcoInfo(1, entry, ""))
    if index == flushed - 1:
        image_file.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_writer_file(path: Path, k: int, n: int, flushed: int, more: int) -> None:
    """Writer k of n wrote `flushed` images, flushed, wrote `more` (chunks, records held),
    and was killed: the file is left open for write, as a SIGKILLed writer leaves it."""
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path), str(k), str(n), str(flushed), str(more)],
        cwd=Path(__file__).parents[2], check=False, capture_output=True, text=True,
    )
    assert done.returncode == -9, done.stderr


@pytest.mark.parametrize("repaired", [False, True], ids=["flags-left", "repaired"])
def test_a_killed_writers_file_gives_a_master_file_marked_incomplete(
    tmp_path: Path, repaired: bool
) -> None:
    dealt = [6, 6]  # 12 images dealt round-robin to 2 writers
    closed, empty = write_set(tmp_path, [6, 0])  # writer 0 closed its file normally
    crashed = Path(empty)
    crashed.unlink()
    killed_writer_file(crashed, 1, 2, flushed=3, more=2)
    if repaired:
        assert clear_status_flags(str(crashed)) is True
    master = str(tmp_path / "file.h5")
    summary = build_master_file(
        master, "CAM", [closed, str(crashed)],
        incomplete_reason="writer 1 restarted during the acquisition", images_dealt=dealt,
    )
    # Writer 1's file maps its 3 flushed images: the 2 later ones were never recorded.
    assert summary.images_per_file == [6, 3] and summary.n_entries == 11
    assert not summary.complete and summary.images_lost == 3
    if not repaired:
        clear_status_flags(str(crashed))  # what the restarted writer does: then the VDS reads it
    with h5py.File(master, "r") as h5:
        assert h5.attrs["complete"] == False  # noqa: E712 (a numpy bool)
        reason = str(h5.attrs["incomplete_reason"])
        assert "writer 1 restarted" in reason and "file1.h5" in reason and "3 dealt image(s)" in reason
        group = h5["CAM"]
        assert list(group.attrs["images_dealt_per_file"]) == dealt
        assert group.attrs["images_lost"] == 3
        assert json.loads(group.attrs["files_not_closed"]) == ["file1.h5"]
        records, data = group["metadata"][:], group["data"]
        assert data.shape == (11, H, W)
        for j in range(11):
            if j % 2 == 0 or j // 2 < 3:  # writer 0's six, writer 1's three flushed
                assert (records[j]["image_id"], records[j]["status"]) == (1000 + j, 1)
                np.testing.assert_array_equal(data[j], frame(1000 + j, H, W))
            else:
                assert records[j]["status"] == 0 and not data[j].any()
    if shutil.which("h5dump"):
        assert h5dump_value(master, "/CAM/data", (4, 1, 2)) == str(frame(1004, H, W)[1, 2])
        assert h5dump_value(master, "/CAM/data", (5, 1, 2)) == str(frame(1005, H, W)[1, 2])


def test_a_complete_master_file_says_so(tmp_path: Path) -> None:
    paths = write_set(tmp_path, [2, 2])
    summary = build_master_file(str(tmp_path / "file.h5"), "CAM", paths, images_dealt=[2, 2])
    assert summary.complete and summary.images_lost == 0
    with h5py.File(tmp_path / "file.h5", "r") as h5:
        assert h5.attrs["complete"] == True  # noqa: E712
        assert "incomplete_reason" not in h5.attrs
        assert json.loads(h5["CAM"].attrs["files_not_closed"]) == []
