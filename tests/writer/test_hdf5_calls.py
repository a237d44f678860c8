"""stddaq_writer.hdf5_calls: set_extent and get_filesize straight into h5py's libhdf5."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from stddaq_writer.hdf5_calls import GrowCalls


def dataset(tmp_path: Path, early: bool) -> tuple[h5py.File, h5py.Dataset]:
    h5file = h5py.File(tmp_path / "f.h5", "w", libver="latest")
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    if early:
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    data = h5file.create_dataset(
        "data", (0, 16, 8), np.uint16, chunks=(1, 16, 8), maxshape=(100, 16, 8), dcpl=dcpl
    )
    return h5file, data


@pytest.mark.parametrize("early", [True, False])
def test_the_calls_act_as_h5pys_on_the_same_file(tmp_path: Path, early: bool) -> None:
    h5file, data = dataset(tmp_path, early)
    with h5file:
        calls = GrowCalls(h5file.id, data.id, 3)
        assert calls.direct  # the library h5py loaded was found and answers for this file
        for length in (1, 2, 7, 3):
            calls.set_extent((length, 16, 8))
            assert data.shape == (length, 16, 8)
            assert calls.filesize() == h5file.id.get_filesize()
        if early:  # each image's chunk was allocated: the end of allocation moved past it
            assert calls.filesize() >= 7 * 16 * 8 * 2
        data[2] = np.full((16, 8), 5, np.uint16)
    with h5py.File(tmp_path / "f.h5", "r") as back:
        assert back["data"].shape == (3, 16, 8)
        assert (back["data"][2] == 5).all() and not back["data"][0].any()


def test_a_failing_call_raises_h5pys_error(tmp_path: Path) -> None:
    h5file, data = dataset(tmp_path, True)
    with h5file:
        calls = GrowCalls(h5file.id, data.id, 3)
        with pytest.raises((ValueError, OSError, RuntimeError)) as direct_error:
            calls.set_extent((101, 16, 8))  # beyond maxshape
        with pytest.raises(type(direct_error.value)) as h5py_error:
            data.id.set_extent((101, 16, 8))
        assert str(direct_error.value) == str(h5py_error.value)
        assert data.shape == (0, 16, 8)
