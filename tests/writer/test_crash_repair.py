"""A file left open by a killed writer process opens again without h5clear."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from stddaq_writer.crash_repair import OpenFileNote, clear_status_flags, lookup3
from stddaq_writer.disk_reserve import reserve_path
from stddaq_writer.h5_layout import FILE_FORMAT_BOUNDS

KILLED_WRITER = """
import os, signal, sys
import h5py
path, bounds = sys.argv[1], (sys.argv[2], sys.argv[3])
f = h5py.File(path, "w-", libver=bounds)
d = f.create_dataset("data", shape=(0, 16, 16), maxshape=(None, 16, 16), chunks=(1, 16, 16), dtype="u2")
f.swmr_mode = True
for i in range(10):
    d.resize((i + 1, 16, 16))
    d[i] = i + 1
    if i == 5:
        f.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_file(path: Path) -> None:
    """An SWMR file whose writing process was killed after flushing 6 images."""
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path), *FILE_FORMAT_BOUNDS], check=False
    )
    assert done.returncode < 0, "the writing process must have been killed"


def test_lookup3_known_values() -> None:
    assert lookup3(b"") == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161


def test_a_killed_writers_file_opens_after_clearing_its_flags(tmp_path: Path) -> None:
    path = tmp_path / "file0.h5"
    killed_file(path)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")
    assert clear_status_flags(str(path)) is True
    with h5py.File(path, "r") as file:
        data = file["data"][:]
    assert data.shape[0] >= 6, "the flushed images are there"
    for index in range(6):
        assert np.all(data[index] == index + 1)
    assert clear_status_flags(str(path)) is False, "a second repair changes nothing"


def test_the_next_writer_process_repairs_what_the_note_names(tmp_path: Path) -> None:
    path = tmp_path / "data" / "file1.h5"
    path.parent.mkdir()
    note = OpenFileNote.of(str(tmp_path), "det", 1)
    note.write(str(path), 42)
    killed_file(path)
    Path(reserve_path(str(path))).write_bytes(b"\0" * 4096)
    assert OpenFileNote.of(str(tmp_path), "det", 1).repair_left_file() == str(path)
    with h5py.File(path, "r") as file:
        assert file["data"].shape[0] >= 6
    assert not Path(reserve_path(str(path))).exists(), "no .reserve leftover"
    assert not Path(note.path).exists()
    assert note.repair_left_file() is None, "nothing left to repair"


def test_a_note_of_a_file_never_created_or_not_hdf5_is_dropped(tmp_path: Path) -> None:
    note = OpenFileNote.of(str(tmp_path), "det", 0)
    note.write(str(tmp_path / "never.h5"), 1)
    assert note.repair_left_file() == str(tmp_path / "never.h5")
    (tmp_path / "text.h5").write_text("not an HDF5 file")
    note.write(str(tmp_path / "text.h5"), 2)
    assert note.repair_left_file() == str(tmp_path / "text.h5")
    assert (tmp_path / "text.h5").read_text() == "not an HDF5 file"
    assert not Path(note.path).exists()
