"""The writer process end to end: producer -> ring -> writer(s) -> files, driven over ZeroMQ."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest

from stddaq_writer.master_file import build_master_file
from tests.common.configs import unused_uid
from tests.writer.conftest import Daq, stop_process
from tests.writer.frames import frame, meta_of
from tests.writer.readback import check_file, h5dump_value

RING_SLOTS = 1000
"""Slots of the test config's ring (std_daq's minimum)."""


def run_acquisition(
    daq: Daq, acq_id: int, directory: Path, ids: list[int], compression: str = "none"
) -> list[dict[str, object]]:
    """Produce `ids`, create, send them, close; the `closed` events of every writer."""
    daq.produce(ids[0], ids[-1] - ids[0] + 1)
    files = daq.files(directory)
    daq.driver.create(acq_id, files, compression)
    daq.driver.wait_all("file_created", acq_id=acq_id)
    daq.driver.send_images(acq_id, [meta_of(i, daq.height, daq.width) for i in ids])
    daq.driver.close(acq_id, len(ids))
    return daq.driver.wait_all("closed", acq_id=acq_id)


@pytest.mark.parametrize("compression", ["none", "bitshuffle_lz4"])
def test_one_writer_writes_every_image_exactly(
    daq1: Daq, acq_id: int, tmp_path: Path, compression: str
) -> None:
    ids = list(range(acq_id * 10_000, acq_id * 10_000 + 60))
    (closed,) = run_acquisition(daq1, acq_id, tmp_path, ids, compression)
    assert (closed["written"], closed["missing"]) == (60, 0)
    path = daq1.files(tmp_path)[0]
    attrs = check_file(path, daq1.detector, ids, daq1.height, daq1.width)
    assert attrs["n_images"] == 60 and attrs["compression"] == compression
    if shutil.which("h5dump"):
        expected = frame(ids[-1], daq1.height, daq1.width)[3, 5]
        assert h5dump_value(path, f"/{daq1.detector}/data", (59, 3, 5)) == str(expected)


@pytest.mark.parametrize("compression", ["none", "bitshuffle_lz4"])
def test_three_writers_and_master_file_in_acquisition_order(
    daq3: Daq, acq_id: int, tmp_path: Path, compression: str
) -> None:
    total = 31  # 11 + 10 + 10: the last two files are one image short
    ids = list(range(acq_id * 10_000, acq_id * 10_000 + total))
    closed = run_acquisition(daq3, acq_id, tmp_path, ids, compression)
    assert [event["written"] for event in closed] == [11, 10, 10]
    files = daq3.files(tmp_path)
    for k, path in enumerate(files):
        check_file(path, daq3.detector, ids[k::3], daq3.height, daq3.width)
    master = str(tmp_path / "file.h5")
    if compression == "none":  # as the driver does it: writer 0 builds it
        daq3.driver.master(acq_id, master, files, total)
        answer = daq3.driver.wait_event(("closed", "error"), writer=0, acq_id=acq_id)
        assert (answer["event"], answer["file"], answer["reason"]) == ("closed", master, "")
        assert (answer["written"], answer["missing"]) == (total, 0)
    else:  # the library function
        summary = build_master_file(master, daq3.detector, files, params={"n_image": total})
        assert summary.n_entries == total and summary.images_per_file == [11, 10, 10]
    check_file(master, daq3.detector, ids, daq3.height, daq3.width)
    if shutil.which("h5dump"):
        expected = frame(ids[30], daq3.height, daq3.width)[1, 2]
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        value = h5dump_value(master, f"/{daq3.detector}/data", (30, 1, 2), cwd=str(elsewhere))
        assert value == str(expected)


def test_precompressed_slots_are_stored_as_they_are(daq1: Daq, acq_id: int, tmp_path: Path) -> None:
    ids = list(range(acq_id * 10_000, acq_id * 10_000 + 20))
    daq1.produce(ids[0], 20, compressed=True)
    files = daq1.files(tmp_path)
    daq1.driver.create(acq_id, files, "bitshuffle_lz4")
    daq1.driver.wait_event("file_created", acq_id=acq_id)
    metas = [meta_of(i, daq1.height, daq1.width, compressed_slot=True) for i in ids]
    daq1.driver.send_images(acq_id, metas)
    daq1.driver.close(acq_id, 20)
    closed = daq1.driver.wait_event("closed", acq_id=acq_id)
    assert closed["written"] == 20
    assert closed["bytes"] == sum(meta.size for meta in metas)  # chunks = slot bytes, once
    check_file(files[0], daq1.detector, ids, daq1.height, daq1.width)


def test_overwritten_slots_are_recorded_missing_never_written_wrong(
    daq1: Daq, acq_id: int, tmp_path: Path
) -> None:
    base = acq_id * 10_000
    daq1.produce(base, RING_SLOTS + 5)  # base..base+4 are overwritten by base+1000..base+1004
    files = daq1.files(tmp_path)
    daq1.driver.create(acq_id, files)
    daq1.driver.wait_event("file_created", acq_id=acq_id)
    wanted = [base + i for i in (0, 1, 2, 3, 4, 5, 6, 1000, 1004)]
    daq1.driver.send_images(acq_id, [meta_of(i, daq1.height, daq1.width) for i in wanted])
    daq1.driver.close(acq_id, len(wanted))
    closed = daq1.driver.wait_event("closed", acq_id=acq_id)
    assert (closed["written"], closed["missing"]) == (4, 5)
    reported = [i for e in daq1.driver.seen if e["acq_id"] == acq_id for i in e["missing_ids"]]
    assert sorted(reported) == wanted[:5]
    check_file(files[0], daq1.detector, [None, None, None, None, None, *wanted[5:]], daq1.height, daq1.width)


def test_bad_requests_get_a_clear_error_and_the_next_one_works(
    daq1: Daq, acq_id: int, tmp_path: Path
) -> None:
    existing = tmp_path / "existing.h5"
    existing.write_bytes(b"keep me")
    cases = [
        (str(existing / "sub" / "f0.h5"), "Not a directory"),
        (str(existing), "exists"),
        ("relative/f0.h5", "not absolute"),
        (str(tmp_path / ".." / "f0.h5"), "'..'"),
    ]
    for number, (path, words) in enumerate(cases):
        bad_id = acq_id * 100 + number
        daq1.driver.create(bad_id, [path])
        error = daq1.driver.wait_event("error", acq_id=bad_id)
        assert words in error["reason"] and error["file"] == path
        daq1.driver.send_images(bad_id, [meta_of(0, daq1.height, daq1.width)])  # no file: dropped
    assert existing.read_bytes() == b"keep me"
    for parts in ([b"nonsense"], [b"\x12\x05short"], [b"create", b"{not json"], [b"\x0a\x03\x08"]):
        daq1.driver.send_raw(0, parts)  # not a WriterAction, truncated, two parts, bad create
    daq1.driver.close(999999, 1)
    assert "no file here" in daq1.driver.wait_event("error", acq_id=999999)["reason"]
    ids = list(range(acq_id * 10_000, acq_id * 10_000 + 5))
    (closed,) = run_acquisition(daq1, acq_id, tmp_path, ids)
    assert closed["written"] == 5
    check_file(daq1.files(tmp_path)[0], daq1.detector, ids, daq1.height, daq1.width)


def test_stop_during_an_acquisition_leaves_a_valid_closed_file(own_daq: Daq, tmp_path: Path) -> None:
    daq = own_daq
    daq.produce(0, 10)
    files = daq.files(tmp_path)
    daq.driver.create(4, files)
    daq.driver.wait_event("file_created", acq_id=4)
    daq.driver.send_images(4, [meta_of(i, daq.height, daq.width) for i in range(10)])
    daq.driver.wait_event("progress", acq_id=4)
    assert stop_process(daq.writers[0]) == 0
    closed = daq.driver.wait_event("closed", acq_id=4)
    assert "writer stopped" in closed["reason"]
    written = closed["written"]
    assert closed["missing"] == 0 and 1 <= written <= 10
    attrs = check_file(files[0], daq.detector, list(range(written)), daq.height, daq.width)
    assert attrs["n_images"] == written and "writer stopped" in attrs["close_reason"]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, user switch)")


@pytest.fixture
def small_disk(shared_tmp: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (unmounted after)."""
    mount_point = shared_tmp / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


@needs_root
def test_full_disk_is_an_error_the_file_stays_valid_and_the_next_acquisition_works(
    daq1: Daq, acq_id: int, small_disk: Path, tmp_path: Path
) -> None:
    base = acq_id * 10_000
    ids = list(range(base, base + RING_SLOTS))  # ~2 MB of images: more than the disk holds
    daq1.produce(base, len(ids))
    files = daq1.files(small_disk)
    daq1.driver.create(acq_id, files)
    daq1.driver.wait_event("file_created", acq_id=acq_id)
    daq1.driver.send_images(acq_id, [meta_of(i, daq1.height, daq1.width) for i in ids])
    error = daq1.driver.wait_event("error", acq_id=acq_id)
    assert "No space left on device" in error["reason"] and files[0] in error["reason"]
    daq1.driver.close(acq_id, len(ids))
    closed = daq1.driver.wait_event("closed", acq_id=acq_id)
    assert closed["reason"] == error["reason"]
    assert os.listdir(small_disk) == ["file0.h5"]  # the disk reserve is gone
    with h5py.File(files[0], "r") as h5:
        group = h5[daq1.detector]
        n_images = int(group.attrs["n_images"])
        assert "No space left" in group.attrs["close_reason"]
        status = group["metadata"]["status"]
        assert group["data"].shape[0] == len(status) == n_images
    written = int((status == 1).sum())
    assert written == error["written"] and 100 < written < len(ids)
    expected = [ids[p] if status[p] == 1 else None for p in range(n_images)]
    check_file(files[0], daq1.detector, expected, daq1.height, daq1.width)
    after = list(range(base + RING_SLOTS, base + RING_SLOTS + 10))
    (closed,) = run_acquisition(daq1, acq_id + 500_000, tmp_path, after)
    assert closed["written"] == 10


@needs_root
def test_files_are_written_as_the_requested_uid(daq1: Daq, acq_id: int, shared_tmp: Path) -> None:
    uid = unused_uid()
    user_dir = shared_tmp / "user"
    user_dir.mkdir()
    os.chown(user_dir, uid, uid)
    ids = list(range(acq_id * 10_000, acq_id * 10_000 + 8))
    daq1.produce(ids[0], len(ids))
    path = str(user_dir / "file0.h5")
    daq1.driver.create(acq_id, [path], uid=uid)
    daq1.driver.wait_event("file_created", acq_id=acq_id)
    daq1.driver.send_images(acq_id, [meta_of(i, daq1.height, daq1.width) for i in ids])
    daq1.driver.close(acq_id, len(ids))
    assert daq1.driver.wait_event("closed", acq_id=acq_id)["written"] == len(ids)
    owner = os.stat(path)
    assert (owner.st_uid, owner.st_gid) == (uid, uid)
    assert check_file(path, daq1.detector, ids, daq1.height, daq1.width)["file_uid"] == uid
    # The user's own permissions apply: a root-owned directory refuses the user's file.
    root_dir = shared_tmp / "root-only"
    root_dir.mkdir(mode=0o755)
    refused = str(root_dir / "file0.h5")
    daq1.driver.create(acq_id + 500_000, [refused], uid=uid)
    error = daq1.driver.wait_event("error", acq_id=acq_id + 500_000)
    assert "Permission denied" in error["reason"] and refused in error["reason"]
    assert not os.listdir(root_dir)
    # The master file of the user's acquisition is the user's too; a bad one is an error.
    master = str(user_dir / "file.h5")
    daq1.driver.master(acq_id, master, [path], len(ids))
    assert daq1.driver.wait_event("closed", writer=0, acq_id=acq_id)["file"] == master
    assert os.stat(master).st_uid == uid
    daq1.driver.master(acq_id, master, [path], len(ids))
    error = daq1.driver.wait_event("error", writer=0, acq_id=acq_id)
    assert "exists" in error["reason"] and error["file"] == master
    hidden = shared_tmp / "private" / "inner"
    hidden.mkdir(parents=True)
    (shared_tmp / "private").chmod(0o700)
    daq1.driver.create(acq_id + 550_000, [str(hidden / "file0.h5")], uid=uid)
    error = daq1.driver.wait_event("error", acq_id=acq_id + 550_000)
    assert "Permission denied" in error["reason"] and str(hidden) in error["reason"]
    # ...and the writer is root again for the next acquisition.
    again = str(root_dir / "again0.h5")
    daq1.driver.create(acq_id + 600_000, [again])
    daq1.driver.wait_event("file_created", acq_id=acq_id + 600_000)
    daq1.driver.close(acq_id + 600_000, 0)
    daq1.driver.wait_event("closed", acq_id=acq_id + 600_000)
    assert os.stat(again).st_uid == 0
