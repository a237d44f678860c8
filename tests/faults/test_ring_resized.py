"""The ring's segment shrunk under a running stack, as a std_daq service with another config
does it (`ftruncate` to its own size): no service dies of SIGBUS; each says so in one error
line and a counter, and never touches the segment again.

Driven by count, not time: the camera's first frames are all written and streamed before
the shrink; only frames sent after it go to slots past the new end of the segment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.faults.rig import Viewer, running_stack, wait_for

pytestmark = pytest.mark.slow

SHRUNK_BYTES = 4096
"""The new size: every slot but the first lies past it (64x64 uint16 = 8192-byte slots)."""


def test_a_ring_shrunk_under_the_receiver_writer_and_live_stream_stops_them_touching_it(
    tmp_path: Path,
) -> None:
    with running_stack(tmp_path, writers=1) as stack:
        assert stack.live_address is not None
        viewer = Viewer(stack.live_address, stack.pattern)
        try:
            stack.wait_idle()
            started = stack.start("shrink", n_image=1000)
            stack.camera("--frames", "40", "--rate", "200", "--first-id", "10").wait()
            stack.wait_written(40)
            wait_for("the viewer got an image", lambda: viewer.report.good > 0)
            pids = {name: stack.pid_of(name) for name in stack.services()}
            mark = len(stack.lines)

            os.truncate(f"/dev/shm/{stack.detector}-image", SHRUNK_BYTES)

            # Each holder notices within a second, without a new image, and says so once.
            def holders_that_noticed() -> set[str] | None:
                found = set()
                for line in stack.lines[mark:]:
                    match = re.match(r"\[(\S+)\].*changed size under this process", line)
                    if match:
                        found.add(match.group(1))
                return found if {"receiver", "writer-0", "live-0"} <= found else None

            noticed = wait_for("receiver, writer and live stream to notice", holders_that_noticed)
            assert noticed >= {"receiver", "writer-0", "live-0"}
            message = next(line for line in stack.lines[mark:] if "changed size" in line)
            assert f"to {SHRUNK_BYTES} bytes" in message

            # New frames would land past the end of the segment: refused, counted, no crash.
            stack.camera("--frames", "20", "--rate", "200", "--first-id", "100").wait()
            wait_for("the receiver to count the refused frames",
                     lambda: stack.last_stats("receiver").get("rejected_ring", 0) >= 20)
            wait_for("the writer's counter", lambda: stack.last_stats("writer").get("ring_resized") == 1)
            wait_for("the live stream's gauge",
                     lambda: stack.last_stats("live_stream").get("rings_resized") == 1)
            assert {name: stack.pid_of(name) for name in stack.services()} == pids
            assert not any(re.search(r"exited with|SIGBUS|Fatal Python error", line)
                           for line in stack.lines[mark:])
            stack.stop()
            status = stack.wait_end(started["acquisition_id"])
            assert status["images_written"] == 40
        finally:
            report = viewer.close()
        assert report.wrong == []
        assert stack.down() == 0, "\n".join(stack.lines[-30:])
        assert not any("exited with" in line for line in stack.lines)
