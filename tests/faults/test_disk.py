"""Disk faults through the driver (REST) under `stddaq up`: a disk that fills up, a
file-size limit reached, a directory that becomes read-only, each in the middle of an
acquisition. The acquisition ends in `error` with a reason naming the file and the cause,
every file written stays valid (every image exact), the next acquisition works, and the
stack stops clean.
"""

from __future__ import annotations

import datetime
import os
import re
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.common.configs import unused_uid
from tests.faults.rig import Camera, Stack, check_files

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount a tmpfs, set another process's limits)"),
]

RATE = "300"


class Disk:
    """The module's stack and its camera (a steady stream the whole time)."""

    def __init__(self, stack: Stack, camera: Camera) -> None:
        self.stack = stack
        self.camera = camera

    def idle(self) -> None:
        self.stack.wait_idle()

    def next_acquisition_works(self, name: str) -> None:
        self.idle()
        status = self.stack.record(name, 100)
        assert (status["outcome"], status["images_written"], status["images_missing"]) == (
            "file_saved",
            100,
            0,
        )
        assert len(self.stack.read_back(status).written_ids) == 100

    def error_latency(self, acquisition_id: int) -> float:
        """Seconds from the writer logging the failure to the driver's `error` (from the logs)."""
        lines = list(self.stack.lines)
        failed = next(
            line
            for line in lines
            if re.search(rf"writer.* acquisition {acquisition_id}: .*(failed|stopped)", line)
        )
        error = next(
            line for line in lines if re.search(rf"driver.* acquisition {acquisition_id}: error:", line)
        )
        return _log_time(error) - _log_time(failed)


def _log_time(line: str) -> float:
    stamp = re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line)
    assert stamp, line
    return datetime.datetime.fromisoformat(stamp.group(0).replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Disk]:
    # Under /tmp with mode 0711: the user of the read-only test must reach its directory.
    base = Path(tempfile.mkdtemp(prefix="flt-disk-", dir="/tmp"))
    base.chmod(0o711)
    stack = Stack(base, writers=2, live_stream=False)
    camera = None
    try:
        stack.up()
        camera = stack.camera("--rate", RATE)
        yield Disk(stack, camera)
    finally:
        if camera is not None:
            camera.stop()
        stack.cleanup()
        shutil.copy(stack.log_path, tmp_path_factory.mktemp("disk") / "stack.log")  # for post-mortems
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def small_disk(disk: Disk) -> Iterator[Path]:
    """A 20 MiB tmpfs under the allowed root: the two 8 MiB disk reserves and ~4 MiB of images."""
    mount_point = disk.stack.data / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_mid_acquisition(disk: Disk, small_disk: Path) -> None:
    stack = disk.stack
    disk.idle()
    started = stack.start("small-disk/run")
    status = stack.wait_end(started["acquisition_id"])
    assert status["outcome"] == "error"
    assert "No space left on device" in status["last_error"]
    assert any(path in status["last_error"] for path in started["files"])
    for path, writer in zip(started["files"], status["writers"], strict=True):
        check = check_files([path], stack.detector, stack.pattern)
        assert len(check.written_ids) == writer["images_written"] > 0
        assert "No space left" in check.close_reasons[0] or "ended in error" in check.close_reasons[0]
    assert [name for name in os.listdir(small_disk / "run") if name.endswith(".reserve")] == []
    latency = disk.error_latency(started["acquisition_id"])
    print(f"FIGURES full disk: error {latency:.3f} s after the write failed")
    disk.next_acquisition_works("after-full-disk")


def test_file_size_limit_reached_mid_acquisition(disk: Disk) -> None:
    """Writer 0 runs under a file-size limit (RLIMIT_FSIZE) of 9 MiB: its 8 MiB disk reserve
    fits, and its file reaches the limit after about 1 MiB of images."""
    stack = disk.stack
    disk.idle()
    writer = stack.pid_of("writer-0")
    soft, hard = resource.prlimit(writer, resource.RLIMIT_FSIZE, (9 * 2**20, resource.RLIM_INFINITY))
    try:
        started = stack.start("size-limit")
        status = stack.wait_end(started["acquisition_id"])
    finally:
        resource.prlimit(writer, resource.RLIMIT_FSIZE, (soft, hard))
    assert status["outcome"] == "error"
    assert "writer 0" in status["last_error"] and "file-size limit" in status["last_error"]
    for path, state in zip(started["files"], status["writers"], strict=True):
        check = check_files([path], stack.detector, stack.pattern)
        assert len(check.written_ids) == state["images_written"] > 0
        assert "file-size limit" in check.close_reasons[0] or "ended in error" in check.close_reasons[0]
    assert os.path.getsize(started["files"][0]) <= 9 * 2**20
    latency = disk.error_latency(started["acquisition_id"])
    print(f"FIGURES size limit: error {latency:.3f} s after the write failed")
    disk.next_acquisition_works("after-size-limit")


def test_directory_made_read_only_mid_acquisition(disk: Disk) -> None:
    """The files are written as a user; their directory becomes read-only while they are
    written: the open files are finished, the master file cannot be made (error, reason)."""
    stack = disk.stack
    disk.idle()
    uid = unused_uid()
    directory = stack.data / "read-only"
    directory.mkdir()
    os.chown(directory, uid, uid)
    started = stack.start("read-only", writer_id=uid)
    stack.wait_written(200)
    directory.chmod(0o555)
    stack.stop()
    status = stack.wait_end(started["acquisition_id"])
    assert status["outcome"] == "error"
    assert "master file" in status["last_error"] and "Permission denied" in status["last_error"]
    check = check_files(started["files"], stack.detector, stack.pattern)
    assert len(check.written_ids) == status["images_written"] >= 200
    assert all(os.stat(path).st_uid == uid for path in started["files"])
    assert not os.path.exists(str(started["master_file"]))
    disk.next_acquisition_works("after-read-only")


def test_after_the_disk_faults_the_stack_stops_clean(disk: Disk) -> None:
    disk.camera.stop()
    disk.stack.assert_stops_clean()
