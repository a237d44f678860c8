"""The file layer: layout, compression, SWMR, close semantics (in-process, real files)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from stddaq_common.bus.metadata import EgInfo, GfInfo, JfInfo, PcoInfo
from stddaq_common.wire.compression import bitshuffle_lz4_compress
from stddaq_writer.h5_layout import BITSHUFFLE_FILTER_ID, FileSpec, image_columns
from stddaq_writer.image_file import ImageFile
from tests.writer.frames import frame
from tests.writer.readback import h5dump_value

H, W = 6, 10
needs_h5dump = pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump (hdf5-tools) not installed")


def spec(compression: Any = "none") -> FileSpec:
    return FileSpec("CAM", "pco", H, W, np.dtype("<u2"), compression, image_columns("pco"))


def write_images(image_file: ImageFile, ids: list[int], compressed: bool = False) -> None:
    for index, image_id in enumerate(ids):
        image = frame(image_id, H, W)
        image_file.write_chunk(index, bitshuffle_lz4_compress(image) if compressed else image)
        image_file.record_written(index, image_id, 1, PcoInfo(10, image_id, "x"))


def test_layout_is_upstreams_plus_timestamps_and_attributes(tmp_path: Path) -> None:
    path = str(tmp_path / "f0.h5")
    params = {"path": str(tmp_path), "n_image": 3, "file_prefix": "f"}
    image_file = ImageFile.create(path, spec(), params=params, daq_config={"detector_name": "CAM"})
    write_images(image_file, [7, 8, 9])
    summary = image_file.close(3)
    assert (summary.n_images, summary.n_written, summary.n_missing) == (3, 3, 0)
    with h5py.File(path, "r") as h5:
        group = h5["CAM"]
        assert set(group) == {"data", "metadata", "timestamp"}
        data = group["data"]
        assert (data.shape, data.maxshape, data.chunks, data.dtype) == (
            (3, H, W), (None, H, W), (1, H, W), np.dtype("<u2"))
        assert data.compression is None
        records = group["metadata"][:]
        assert records.dtype == np.dtype([("image_id", "<u8"), ("status", "<u8")])
        assert records["image_id"].tolist() == [7, 8, 9] and records["status"].tolist() == [1, 1, 1]
        assert group["timestamp"][:].tolist() == [10_000_000_007, 10_000_000_008, 10_000_000_009]
        assert group["timestamp"].attrs["units"] == "ns"
        attrs = group.attrs
        assert json.loads(attrs["acquisition_params"]) == params
        assert json.loads(attrs["daq_config"]) == {"detector_name": "CAM"}
        assert attrs["param_n_image"] == 3 and attrs["n_images"] == 3 and attrs["closed_at"]
        assert attrs["NX_class"] == "NXdata" and attrs["signal"] == "data"


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "f0.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        ImageFile.create(str(path), spec())
    assert path.read_bytes() == b"precious"


def test_compressed_file_uses_filter_32008_and_reads_back(tmp_path: Path) -> None:
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec("bitshuffle_lz4"))
    write_images(image_file, [1, 2], compressed=True)
    image_file.close(2)
    with h5py.File(path, "r") as h5:
        data = h5["CAM/data"]
        assert data.id.get_create_plist().get_filter(0)[0] == BITSHUFFLE_FILTER_ID
        np.testing.assert_array_equal(data[1], frame(2, H, W))
        chunk_bytes = data.id.read_direct_chunk((0, 0, 0))[1]
        assert chunk_bytes == bitshuffle_lz4_compress(frame(1, H, W))  # stored as given, once


def test_close_with_more_images_than_arrived_marks_the_tail_missing(tmp_path: Path) -> None:
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec())
    write_images(image_file, [0, 1])
    image_file.record_missing(3, 3)
    summary = image_file.close(5)
    assert (summary.n_images, summary.n_written, summary.n_missing) == (5, 2, 3)
    with h5py.File(path, "r") as h5:
        records = h5["CAM/metadata"][:]
        assert records["status"].tolist() == [1, 1, 0, 0, 0]
        assert records["image_id"].tolist()[:4] == [0, 1, 0, 3]
        assert not h5["CAM/data"][2:].any()
        assert h5["CAM"].attrs["n_missing"] == 3


def test_out_of_order_indices_land_in_place(tmp_path: Path) -> None:
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec())
    for index in (2, 0, 3, 1):
        image_file.write_chunk(index, frame(index + 50, H, W))
        image_file.record_written(index, index + 50, 1, None)
    image_file.close(4)
    with h5py.File(path, "r") as h5:
        assert h5["CAM/metadata"]["image_id"].tolist() == [50, 51, 52, 53]
        np.testing.assert_array_equal(h5["CAM/data"][3], frame(53, H, W))


_SWMR_READER = """
import sys, h5py
with h5py.File(sys.argv[1], "r", swmr=True) as h5:
    data, metadata = h5["CAM/data"], h5["CAM/metadata"]
    print(data.shape[0], metadata.shape[0], flush=True)
    sys.stdin.readline()
    data.refresh(); metadata.refresh()
    print(data.shape[0], metadata.shape[0], int(data[data.shape[0] - 1][0, 1]),
          int(metadata[metadata.shape[0] - 1]["image_id"]), flush=True)
"""


def test_a_swmr_reader_follows_the_file_while_it_is_written(tmp_path: Path) -> None:
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec())
    write_images(image_file, [0, 1])
    image_file.flush()
    reader = subprocess.Popen(
        [sys.executable, "-c", _SWMR_READER, path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline().split() == ["2", "2"]
        write_images(image_file, [0, 1, 2, 3, 4])
        image_file.flush()
        reader.stdin.write("\n")
        reader.stdin.flush()
        expected = int(frame(4, H, W)[0, 1])
        assert reader.stdout.readline().split() == ["5", "5", str(expected), "4"]
        assert reader.wait(30) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    image_file.close(5)


@needs_h5dump
@pytest.mark.parametrize("compression", ["none", "bitshuffle_lz4"])
def test_h5dump_1_10_reads_the_files(tmp_path: Path, compression: Any) -> None:
    path = str(tmp_path / "f0.h5")
    image_file = ImageFile.create(path, spec(compression))
    write_images(image_file, [5, 6], compressed=compression != "none")
    image_file.close(2)
    assert h5dump_value(path, "/CAM/data", (1, 2, 3)) == str(frame(6, H, W)[2, 3])
    assert h5dump_value(path, "/CAM/timestamp", (1,)) == "10000000006"


@pytest.mark.parametrize(
    ("detector_type", "detail", "expected"),
    [
        ("gigafrost", GfInfo(3, 4, 5, 6, 7, True),
         {"frame_timestamp": 6, "exposure_time": 7, "scan_id": 3, "scan_time": 4, "sync_time": 5}),
        ("eiger", EgInfo(9), {"exptime": 9}),
        ("jungfrau-converted", JfInfo(11), {"daq_rec": 11}),
    ],
)
def test_per_image_detector_fields_have_their_own_datasets(
    tmp_path: Path, detector_type: str, detail: Any, expected: dict[str, int]
) -> None:
    path = str(tmp_path / "f0.h5")
    file_spec = FileSpec("CAM", detector_type, H, W, np.dtype("<u2"), "none", image_columns(detector_type))
    image_file = ImageFile.create(path, file_spec)
    image_file.write_chunk(0, frame(0, H, W))
    image_file.record_written(0, 0, 1, detail)
    image_file.close(1)
    with h5py.File(path, "r") as h5:
        assert {name: int(h5["CAM"][name][0]) for name in expected} == expected
