"""Write-behind: a writer file's pages leave the page cache behind the writes, and the file
is the same, pixel for pixel (real files; the page cache read with util-linux fincore)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from stddaq_writer.h5_layout import FileSpec, image_columns
from stddaq_writer.image_file import ImageFile
from stddaq_writer.write_behind import WriteBehind
from tests.writer.frames import frame

H, W = 256, 256  # 128 KiB images
N_IMAGES = 400  # 50 MiB
WINDOW = 2**20


def cached_bytes(path: str) -> int:
    """Bytes of the file in the page cache now."""
    fincore = shutil.which("fincore")
    if fincore is None:
        pytest.skip("util-linux fincore is not installed")
    result = subprocess.run([fincore, "--bytes", "--noheadings", "--output", "RES", path],
                            capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


def write_file(path: str, write_behind_bytes: int) -> tuple[ImageFile, int]:
    """Write N_IMAGES images; return the open file and its bytes in the page cache."""
    spec = FileSpec("CAM", "pco", H, W, np.dtype("<u2"), "none", image_columns("pco"))
    image_file = ImageFile.create(path, spec, write_behind_bytes=write_behind_bytes)
    for index in range(N_IMAGES):
        image_file.write_chunk(index, frame(index, H, W))
        image_file.record_written(index, index, 1, None)
    return image_file, cached_bytes(path)


def test_written_images_leave_the_page_cache_and_the_file_is_exact(tmp_path: Path) -> None:
    plain, plain_cached = write_file(str(tmp_path / "plain.h5"), 0)
    behind, behind_cached = write_file(str(tmp_path / "behind.h5"), WINDOW)
    steps = behind._behind.steps
    plain.close(N_IMAGES)
    behind.close(N_IMAGES)
    data_bytes = N_IMAGES * H * W * 2
    assert steps >= data_bytes // WINDOW - 1
    assert plain_cached > 0.9 * data_bytes, "without write-behind the kernel keeps the pages"
    assert behind_cached < 0.25 * data_bytes, f"{behind_cached} bytes still cached"
    with h5py.File(behind.path, "r") as h5:
        records = h5["CAM/metadata"][:]
        assert records["image_id"].tolist() == list(range(N_IMAGES))
        assert set(records["status"].tolist()) == {1}
        data = h5["CAM/data"]
        for index in range(N_IMAGES):
            np.testing.assert_array_equal(data[index], frame(index, H, W))


def test_a_file_system_that_refuses_the_hints_gets_plain_writes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 4096)
    behind = WriteBehind(str(path), 1024)
    behind.close()  # a closed descriptor: both calls fail with EBADF, as a refusing one would
    behind.wrote(4096)
    assert not behind.enabled and behind.steps == 0
    behind.wrote(4096)  # and stay off, without raising


def test_a_file_it_cannot_open_gets_plain_writes(tmp_path: Path) -> None:
    behind = WriteBehind(str(tmp_path / "does-not-exist"), 1024)
    assert not behind.enabled
    behind.wrote(4096)  # no error, nothing done
    behind.close()


def test_a_negative_window_is_refused_at_startup_naming_the_option() -> None:
    config = Path(__file__).parents[1] / "data" / "gf_tomcat.json"
    result = subprocess.run([sys.executable, "-m", "stddaq_writer", str(config), "--write-behind-mb", "-1"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--write-behind-mb: -1 is outside 0..1048576" in result.stderr
