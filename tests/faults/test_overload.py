"""Overload: a camera faster than the writers, and faster than the receiver.

What must hold: nothing torn or wrong is ever written or streamed; every image the driver
dealt is in the files, either exact (status 1) or recorded missing (status 0, zeros);
the status (images_not_written, missing_ids), the driver's counters and the files agree
exactly; when the load drops, the same processes write everything again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.faults.rig import Stack, Viewer, running_stack, wait_for

pytestmark = pytest.mark.slow

STALL_IMAGES = 1500
"""Images dealt while the writer is stalled: more than the ring's 1000 slots."""
OVERLOAD_FRAMES = 8000
"""Frames the camera sends at full speed (enough to last through the stall)."""


def _caught_up(stack: Stack, handled: int) -> dict[str, object] | None:
    """The status once the writer has handled (written or recorded missing) `handled` images."""
    status = stack.status()
    return status if status["images_written"] + status["images_not_written"] >= handled else None


def test_camera_faster_than_the_writer_overrun_is_counted_listed_and_recovered(tmp_path: Path) -> None:
    with running_stack(tmp_path, "-n", "1", writers=1) as stack:
        viewer = Viewer(str(stack.live_address), stack.pattern)
        # As fast as the receiver takes frames, then the camera ends (nothing left queued).
        camera = stack.camera("--rate", "0", "--frames", str(OVERLOAD_FRAMES))
        started = stack.start("overload")
        stack.wait_written(200)
        writer = stack.pid_of("writer-0")
        # The writer stalls (a slow disk, no CPU) while the camera goes on at full speed:
        # the ring (1000 slots) is overrun for certain.
        os.kill(writer, signal.SIGSTOP)
        try:
            dealt = stack.status()["images_dealt"]
            wait_for(
                "images dealt while the writer stalls",
                lambda: stack.status()["images_dealt"] > dealt + STALL_IMAGES,
            )
        finally:
            os.kill(writer, signal.SIGCONT)
        overloaded = wait_for(
            "the writer reporting the overrun", lambda: (s := stack.status())["images_not_written"] and s
        )
        assert overloaded["state"] == "recording" and overloaded["last_error"] is None
        # The load drops: a camera at a rate the writer can take, ids going on upwards.
        assert camera.wait() == 0
        calm_from = OVERLOAD_FRAMES
        slow = stack.camera("--rate", "200", "--first-id", str(calm_from))
        status = wait_for(
            "400 images after the load dropped", lambda: _caught_up(stack, OVERLOAD_FRAMES + 400)
        )
        not_written_then = status["images_not_written"]
        stack.wait_written(status["images_written"] + 200)
        stack.stop()
        final = stack.wait_end(started["acquisition_id"])
        slow.stop()
        stats = stack.stats()
        report = viewer.close()

        assert final["outcome"] == "file_saved"
        assert final["images_not_written"] == not_written_then > 0  # nothing more once calm
        assert final["images_written"] + final["images_not_written"] == final["images_dealt"]
        assert final["images_missing"] == final["images_not_written"] + final["id_gaps"]
        check = stack.read_back(final)
        assert len(check.ids) == final["images_dealt"]
        assert len(check.missing_ids) == final["images_not_written"]
        assert sorted(check.missing_ids)[:1000] == final["missing_ids"]
        assert all(image_id < calm_from for image_id in check.missing_ids)
        assert stats["images_not_written"] == final["images_not_written"]
        assert stats["images_written"] == final["images_written"]
        assert report.wrong == [] and report.undecodable == 0 and report.good > 0
        print(
            f"FIGURES overload: {final['images_dealt']} dealt, {final['images_written']} written, "
            f"{final['images_not_written']} overrun (status 0), live stream {report.good} checked"
        )
        stack.assert_stops_clean()
        receiver = stack.last_stats("receiver")
        # One connection: the receiver itself loses nothing, the camera just waits.
        assert receiver["frames_published"] == receiver["frames_received"]
        assert receiver["late_frames"] == receiver["missing_ids"] == receiver["restarts"] == 0


@pytest.mark.parametrize("reader", ["zmtp", "zmq"])
def test_camera_faster_than_the_receiver_loses_no_received_frame(tmp_path: Path, reader: str) -> None:
    """The default 4 connections, the camera flat out: no received frame may be dropped as
    late nor an old one taken for a camera restart when the connections' queues drift apart
    (both happened until the receiver parked connections that run a window ahead); with
    the receiver's own ZMTP reader and with libzmq."""
    frames = 30_000
    with running_stack(tmp_path, "--input-reader", reader, writers=2) as stack:
        started = stack.start("receiver-overload")
        camera = stack.camera("--rate", "0", "--frames", str(frames))
        camera.wait(300)
        wait_for(
            "the receiver has handled every frame",
            lambda: stack.last_stats("receiver")["frames_received"] == frames,
        )
        stack.stop()
        final = stack.wait_end(started["acquisition_id"])
        stack.assert_stops_clean()
        receiver = stack.last_stats("receiver")
        assert receiver["late_frames"] == receiver["restarts"] == 0
        assert receiver["frames_published"] == frames
        assert final["outcome"] == "file_saved" and final["id_gaps"] == 0
