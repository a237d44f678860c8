"""`kill -9` of each service in the middle of an acquisition under `stddaq up`.

One stack for the module (2 writers, a live stream with a checking viewer, a camera at a
steady rate). Each test kills one service mid-acquisition and shows: the supervisor
restarts it; the ring and the other services survive; the files written so far open and
hold only the camera's exact images; the acquisition ends in a defined state whose reason
names what happened; the next acquisition works. The last test stops the stack and finds
nothing left behind.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import h5py
import httpx
import pytest

from tests.faults.rig import Camera, FileCheck, Stack, Viewer, check_files, wait_for

pytestmark = pytest.mark.slow

RATE_HZ = 300


class Crashes:
    """The module's stack, camera and viewer."""

    def __init__(self, stack: Stack, camera: Camera, viewer: Viewer) -> None:
        self.stack = stack
        self.camera = camera
        self.viewer = viewer
        self.runs = 0

    def healthy(self) -> None:
        """Wait until the driver answers, is idle and hears every writer."""
        self.stack.wait_idle()

    def crash(self, service: str) -> None:
        """Kill -9 `service`; the supervisor restarts it and every other service lives on."""
        before = {name: self.stack.pid_of(name) for name in self.stack.services()}
        self.stack.crash(service)
        after = {name: self.stack.pid_of(name) for name in self.stack.services()}
        assert after[service] != before[service]
        assert {k: v for k, v in after.items() if k != service} == {
            k: v for k, v in before.items() if k != service
        }

    def name(self) -> str:
        self.runs += 1
        return f"run{self.runs}"

    def next_acquisition_works(self) -> None:
        """A fresh acquisition of 100 images is complete and exact."""
        self.healthy()
        status = self.stack.record(self.name(), 100)
        assert (status["outcome"], status["images_written"], status["images_missing"]) == (
            "file_saved",
            100,
            0,
        )
        check = self.stack.read_back(status)
        assert len(check.written_ids) == 100
        assert check.ids == list(range(check.ids[0], check.ids[0] + 100))


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashes]:
    stack = Stack(tmp_path_factory.mktemp("crashes"), writers=2)
    camera = viewer = None
    try:
        stack.up()
        camera = stack.camera("--rate", str(RATE_HZ))
        viewer = Viewer(str(stack.live_address), stack.pattern)
        yield Crashes(stack, camera, viewer)
    finally:
        if viewer is not None:
            viewer.close()
        if camera is not None:
            camera.stop()
        stack.cleanup()


def test_writer_killed_mid_acquisition(crashes: Crashes) -> None:
    stack = crashes.stack
    crashes.healthy()
    started = stack.start(crashes.name())
    stack.wait_written(3 * RATE_HZ)
    # Writer 1's file holds images for sure (it flushed them) before it is killed.
    wait_for("writer 1 flushed images", lambda: stack.status()["writers"][1]["images_flushed"] > 0)
    crashes.crash("writer-1")
    status = stack.wait_end(started["acquisition_id"])
    assert status["outcome"] == "error"
    assert "writer 1" in status["last_error"]
    lost = status["writers"][1]
    assert lost["state"] == "error" and lost["last_error"]
    assert status["writers"][0]["state"] == "closed"
    # Writer 0 closed its file normally; writer 1's file keeps what it had flushed.
    kept = check_files([status["files"][0]], stack.detector, stack.pattern)
    assert len(kept.written_ids) == status["writers"][0]["images_written"] > 0
    crashed = check_files([status["files"][1]], stack.detector, stack.pattern, zeros_when_missing=False)
    assert len(crashed.written_ids) >= lost["images_written"] > 0
    assert status["images_written"] == sum(w["images_written"] for w in status["writers"])
    # A master file over what the two files hold, marked incomplete, naming the writer.
    assert "master file" in status["last_error"] and "marked incomplete" in status["last_error"]
    master = check_master_marked_incomplete(status, stack, kept, crashed)
    print(
        f"FIGURES writer killed: {status['images_dealt']} dealt; writer 0 file {len(kept.written_ids)}; "
        f"writer 1 counted {lost['images_written']} (flushed), its file holds {len(crashed.written_ids)}; "
        f"master file {len(master.ids)} entries, {len(master.written_ids)} images, marked incomplete"
    )
    crashes.next_acquisition_works()


def check_master_marked_incomplete(
    status: dict[str, Any], stack: Stack, kept: FileCheck, crashed: FileCheck
) -> FileCheck:
    """The master file of an acquisition that lost writer 1: it opens (h5py, h5dump), says
    it is incomplete and why, and holds exactly the images the two files hold, each one
    the camera's, in acquisition order (entry j: image j // 2 of file j % 2)."""
    path = status["master_file"]
    with h5py.File(path, "r") as h5:
        assert h5.attrs["complete"] == False  # noqa: E712 (a numpy bool)
        reason = str(h5.attrs["incomplete_reason"])
        group = h5[stack.detector]
        dealt = [int(n) for n in group.attrs["images_dealt_per_file"]]
        not_closed = json.loads(group.attrs["files_not_closed"])
    # The driver notices the killed writer by its new process or by an image it cannot deliver.
    assert reason.startswith("writer 1 "), reason
    assert not_closed == [os.path.basename(status["files"][1])]
    assert sum(dealt) == status["images_dealt"]
    master = check_files([path], stack.detector, stack.pattern)  # status 1: exact; 0: zeros
    # The crashed file counts up to its last recorded image; its records beyond are the
    # ones its killed process never flushed (all status 0).
    recorded = max((k + 1 for k, s in enumerate(crashed.status) if s != 0), default=0)
    n_kept = len(kept.ids)
    assert len(master.ids) == max(2 * n_kept - 1, 2 * recorded)
    assert master.ids[0::2][:n_kept] == kept.ids and master.status[0::2][:n_kept] == kept.status
    assert master.ids[1::2][:recorded] == crashed.ids[:recorded]
    assert sorted(master.written_ids) == sorted(kept.written_ids + crashed.written_ids)
    if shutil.which("h5dump"):
        for args in (["-a", "/incomplete_reason"], ["-d", f"/{stack.detector}/metadata", "-c", "4"]):
            done = subprocess.run(
                ["h5dump", *args, path], capture_output=True, text=True, check=False, timeout=60
            )
            assert done.returncode == 0 and "ERROR" not in done.stdout, done.stdout + done.stderr
            assert "writer 1" in done.stdout or "image_id" in done.stdout, done.stdout
    return master


def test_receiver_killed_mid_acquisition(crashes: Crashes) -> None:
    stack = crashes.stack
    crashes.healthy()
    started = stack.start(crashes.name())
    before = stack.wait_written(RATE_HZ)["images_written"]
    ring = os.stat(f"/dev/shm/{stack.detector}-image")
    crashes.crash("receiver")
    kept = os.stat(f"/dev/shm/{stack.detector}-image")
    assert (kept.st_dev, kept.st_ino) == (ring.st_dev, ring.st_ino)  # the same ring, taken over
    stack.wait_written(before + RATE_HZ)  # the new receiver took over the ring in place
    stack.stop()
    status = stack.wait_end(started["acquisition_id"])
    assert status["outcome"] == "file_saved" and status["last_error"] is None
    # Frames inside the killed receiver are ids never published (id_gaps). When it is back,
    # the camera sends its backlog flat out, which may overrun the writers: those images
    # are recorded missing (status 0). Every dealt image is in the files, counted exactly.
    check = stack.read_back(status)
    assert len(check.ids) == status["images_dealt"]
    assert all(b > a for a, b in itertools.pairwise(check.ids))
    assert check.ids[-1] - check.ids[0] + 1 - len(check.ids) == status["id_gaps"]
    assert len(check.missing_ids) == status["images_not_written"]
    assert sorted(check.missing_ids)[:1000] == status["missing_ids"]
    assert (
        len(check.written_ids) == status["images_written"] == status["images_dealt"] - len(check.missing_ids)
    )
    assert status["images_missing"] == status["id_gaps"] + status["images_not_written"]
    print(
        f"FIGURES receiver killed: {status['id_gaps']} ids never published, "
        f"{status['images_not_written']} overrun after the restart, {status['images_written']} written"
    )
    crashes.next_acquisition_works()


def test_a_receiver_that_stays_down_is_named_in_the_status_and_the_error(crashes: Crashes) -> None:
    """The supervisor is paused (SIGSTOP) so that nothing restarts the killed receiver: the
    driver's status names it down; a writer lost meanwhile fails the acquisition with an
    error that names the receiver first; once the supervisor goes on, all is back."""
    stack = crashes.stack
    crashes.healthy()
    # The camera runs: the driver hears metadata (run alone, this test is the first to ask).
    status = wait_for(
        "the driver to hear the receiver's metadata",
        lambda: now if (now := stack.status())["receiver"]["seconds_since_metadata"] is not None else None,
    )
    assert status["down"] == [] and status["receiver"]["alive"] is True, status["receiver"]
    started = stack.start(crashes.name())
    stack.wait_written(RATE_HZ)
    assert stack.process is not None
    supervisor = stack.process.pid
    assert supervisor is not None
    os.kill(supervisor, signal.SIGSTOP)
    try:
        os.kill(stack.pid_of("receiver"), signal.SIGKILL)

        def receiver_down() -> dict[str, Any] | None:
            now = stack.status()
            return now if now["down"] == ["receiver"] else None

        status = wait_for("the driver to see the receiver down", receiver_down)
        receiver = status["receiver"]
        assert receiver["alive"] is False and "the receiver is not running" in receiver["problem"]
        assert receiver["address"].endswith(f"/{stack.detector}-image")
        assert status["state"] == "recording", "no images: the acquisition waits, as for a camera pause"
        os.kill(stack.pid_of("writer-1"), signal.SIGKILL)
        status = stack.wait_end(started["acquisition_id"])
        assert "receiver" in status["down"] and "writer-1" in status["down"]
    finally:
        os.kill(supervisor, signal.SIGCONT)
    assert status["outcome"] == "error"
    error = status["last_error"]
    assert error.startswith("the receiver is not running: no process serves ipc://"), error
    assert "writer 1" in error and "marked incomplete" in error, error
    wait_for("the receiver and writer 1 back", lambda: stack.status()["down"] == [])
    assert stack.status()["receiver"]["alive"] is True
    crashes.next_acquisition_works()


def test_driver_killed_mid_acquisition(crashes: Crashes) -> None:
    stack = crashes.stack
    crashes.healthy()
    started = stack.start(crashes.name())
    acquisition_id = started["acquisition_id"]
    stack.wait_written(3 * RATE_HZ)
    crashes.crash("driver")

    def orphan_closed() -> dict[str, object] | None:
        try:
            status = stack.status()
        except httpx.HTTPError:
            return None
        done = status["acquisition_id"] == acquisition_id and len(status["files"]) == 2
        return status if done else None

    # The new driver finds the writers still holding the files and has them closed.
    status = wait_for("the new driver closed the files of the old acquisition", orphan_closed)
    assert status["state"] == "idle" and status["outcome"] == "error"
    assert f"driver restarted during acquisition {acquisition_id}" in str(status["last_error"])
    check = check_files(list(started["files"]), stack.detector, stack.pattern)
    assert len(check.written_ids) > 0 and all("driver restarted" in r for r in check.close_reasons)
    print(f"FIGURES driver killed: files closed by the new driver hold {len(check.written_ids)} images")
    crashes.next_acquisition_works()
    assert stack.status()["acquisition_id"] == acquisition_id + 1


def test_live_stream_killed_mid_acquisition(crashes: Crashes) -> None:
    stack = crashes.stack
    crashes.healthy()
    started = stack.start(crashes.name(), n_image=4 * RATE_HZ)
    stack.wait_written(RATE_HZ)
    crashes.crash("live-0")
    seen = crashes.viewer.report.good
    wait_for(
        "the viewer receiving from the restarted live stream", lambda: crashes.viewer.report.good > seen + 50
    )
    status = stack.wait_end(started["acquisition_id"])
    assert (status["outcome"], status["images_written"], status["images_missing"]) == (
        "file_saved",
        4 * RATE_HZ,
        0,
    )
    assert len(stack.read_back(status).written_ids) == 4 * RATE_HZ


def test_after_the_crashes_nothing_was_streamed_wrong_and_the_stack_stops_clean(crashes: Crashes) -> None:
    report = crashes.viewer.report
    assert report.good > 0 and report.wrong == [] and report.undecodable == 0
    crashes.camera.stop()
    crashes.stack.assert_stops_clean()
