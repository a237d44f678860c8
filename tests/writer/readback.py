"""Reading written files back: pixel-exact images, metadata in order, h5dump."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from tests.writer.frames import frame, timestamp_ns

GOOD = 1
MISSING = 0


def check_file(
    path: str, detector: str, ids: Sequence[int | None], height: int, width: int
) -> dict[str, Any]:
    """Assert the file holds exactly `ids` in order (None = missing: zeros, status 0)."""
    with h5py.File(path, "r") as h5:
        group = h5[detector]
        data = group["data"]
        metadata = group["metadata"][:]
        assert data.shape == (len(ids), height, width)
        if not data.is_virtual:
            assert data.maxshape == (None, height, width)
            assert data.chunks == (1, height, width)
        assert data.dtype == np.dtype("<u2")
        assert metadata.dtype.names == ("image_id", "status")
        assert len(metadata) == len(ids)
        timestamps = group["timestamp"][:]
        for position, image_id in enumerate(ids):
            image = data[position]
            if image_id is None:
                assert metadata["status"][position] == MISSING
                assert not image.any(), f"missing image at {position} is not zeros"
                continue
            assert metadata["image_id"][position] == image_id
            assert metadata["status"][position] == GOOD, f"status at {position}"
            np.testing.assert_array_equal(image, frame(image_id, height, width), f"image {image_id}")
            assert timestamps[position] == timestamp_ns(image_id)
        return dict(group.attrs)


def h5dump_value(path: str, dataset: str, start: tuple[int, ...], cwd: str | None = None) -> str:
    """One value of a dataset as h5dump prints it (bitshuffle via hdf5plugin's folder)."""
    h5dump = shutil.which("h5dump")
    assert h5dump is not None
    env = dict(os.environ, HDF5_PLUGIN_PATH=hdf5plugin.PLUGIN_PATH)
    count = ",".join("1" for _ in start)
    result = subprocess.run(
        [h5dump, "-d", dataset, "-s", ",".join(map(str, start)), "-c", count, "-w", "0", path],
        capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    prefix = f"({','.join(map(str, start))})"
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith(prefix))
    return line.split(":", 1)[1].strip()
