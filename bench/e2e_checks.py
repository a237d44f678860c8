"""What the end-to-end benchmark checks and compares against: the files, and the HDF5 ceiling.

- `check_files`: every image of an acquisition's writer files is read back (raw chunk,
  no filter) and compared pixel by pixel with the fake camera's frame of its id; the ids
  that are there and right are counted against the window of ids the camera sent, and the
  camera's achieved rate comes from the files' BSREAD timestamps.
- `hdf5_ceiling_seconds`: one process writing the same frames from memory with direct
  chunk writes into the same layout, on the same disk (what a writer does minus the ring);
  also with write-behind (what the writers do to the page cache);
- `disk_ceiling_seconds`: the same frames written with O_DIRECT by one process, no HDF5.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from bench.disk_ceiling import aligned_copies, direct_write_seconds
from bench.harness import Stopwatch
from stddaq_fake_camera.frames import FramePattern
from stddaq_writer.write_behind import DEFAULT_WINDOW_BYTES, WriteBehind

HEIGHT, WIDTH = 1024, 1024
FILE_BOUNDS = ("v110", "v110")


@dataclass(frozen=True, slots=True)
class FileCheck:
    """Ids found right in the files of one acquisition, and the camera's pace."""

    good: int
    """Distinct ids in the window whose image is present and pixel-exact."""
    wrong: int
    """Images present (status != 0) that differ from the camera's frame, or lie outside the window."""
    master_mismatch: int
    """Ids the master file lists differently from the writer files."""
    achieved_fps: float
    """The camera's rate over the window, from the first and last good image's timestamps."""


def _pattern() -> FramePattern:
    return FramePattern((HEIGHT, WIDTH), np.dtype("<u2"))


def check_files(
    files: list[str], master: str | None, detector: str, first_id: int, last_id: int
) -> FileCheck:
    """Read back every image of `files` and compare it with the camera's frame of its id."""
    pattern = _pattern()
    good: set[int] = set()
    present: set[int] = set()
    stamps: dict[int, int] = {}
    wrong = 0
    for path in files:
        with h5py.File(path, "r") as h5:
            group: Any = h5[detector]
            records = group["metadata"][:]
            times = group["timestamp"][:]
            data = group["data"]
            pairs = zip(records["image_id"], records["status"], strict=True)
            for index, (image_id, status) in enumerate(pairs):
                if status == 0:
                    continue
                image_id = int(image_id)
                present.add(image_id)
                _mask, chunk = data.id.read_direct_chunk((index, 0, 0))
                image = np.frombuffer(chunk, "<u2")
                if first_id <= image_id <= last_id and np.array_equal(image, pattern.frame(image_id).ravel()):
                    good.add(image_id)
                    stamps[image_id] = int(times[index])
                else:
                    wrong += 1
    mismatch = 0
    if master is not None:
        with h5py.File(master, "r") as h5:
            records = h5[detector]["metadata"][:]
            listed = {int(i) for i, s in zip(records["image_id"], records["status"], strict=True) if s}
        mismatch = len(listed ^ present)
    achieved = 0.0
    if len(stamps) >= 2:
        low, high = min(stamps), max(stamps)
        span_s = (stamps[high] - stamps[low]) / 1e9
        achieved = (high - low) / span_s if span_s > 0 else 0.0
    return FileCheck(len(good), wrong, mismatch, achieved)


def hdf5_ceiling_seconds(n: int, path: str, write_behind: bool = False) -> float:
    """Seconds for one process to write n camera frames with direct chunk writes, closed;
    with `write_behind`, pushing them out of the page cache as the writers do
    (stddaq_writer.write_behind, its default window)."""
    pattern = _pattern()
    frames = [pattern.frame(image_id) for image_id in range(n)]
    with Stopwatch() as watch, h5py.File(path, "w", libver=FILE_BOUNDS) as h5:
        data = h5.create_dataset(
            "D/data", shape=(0, HEIGHT, WIDTH), maxshape=(None, HEIGHT, WIDTH),
            chunks=(1, HEIGHT, WIDTH), dtype="<u2",
        )
        behind = WriteBehind(path, DEFAULT_WINDOW_BYTES if write_behind else 0)
        for index, frame in enumerate(frames):
            data.id.set_extent((index + 1, HEIGHT, WIDTH))
            data.id.write_direct_chunk((index, 0, 0), frame)
            behind.wrote(frame.nbytes)
        behind.close()
    os.unlink(path)
    return watch.seconds


def disk_ceiling_seconds(n: int, path: str) -> float:
    """Seconds for one process to write n camera frames with O_DIRECT (no HDF5)."""
    pattern = _pattern()
    buffers = aligned_copies([pattern.frame(image_id) for image_id in range(min(n, 64))])
    try:
        return direct_write_seconds(buffers, n, path)
    finally:
        for buffer in buffers:
            buffer.close()
