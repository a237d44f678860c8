"""Connections that drift apart: a frame a whole window ahead waits, it does not push ids out.

In-process pipeline (no sockets) with `sources` connections; `source` says which
connection a frame came from, `parked_sources` which ones the receive loop must not read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from stddaq_common.bus.metadata import ImageMeta
from stddaq_common.ring.geometry import RingGeometry
from stddaq_common.ring.image_ring import ImageRing
from stddaq_common.runtime.stats import Stats
from stddaq_fake_camera.frames import FramePattern
from stddaq_fake_camera.messages import MessageMaker
from stddaq_fake_camera.schedule import SendKind
from stddaq_receiver.inputs import BsreadFrames
from stddaq_receiver.pipeline import ReceiverCounters, ReceiverPipeline
from stddaq_receiver.reorder import ReorderWindow
from stddaq_receiver.slot_writer import SlotWriter

H, W = 4, 6
U2 = np.dtype("<u2")
STAMP = (1_700_000_000, 1)
WINDOW = 8
TIMEOUT = 0.5
MAKER = MessageMaker(FramePattern((H, W), U2))


class Rig:
    """A pipeline reading `sources` connections into a real ring, publishing into a list."""

    def __init__(self, ring: ImageRing, sources: int) -> None:
        self.ring = ring
        self.published: list[int] = []
        self.stats = Stats("receiver", "test", period=60)
        self.pipeline = ReceiverPipeline(
            BsreadFrames(H, W, U2), SlotWriter(ring, H, W, U2), ReorderWindow(size=WINDOW, timeout=TIMEOUT),
            self._publish, ReceiverCounters.register(self.stats), sources=sources,
        )
        self.now = 0.0

    def _publish(self, meta: ImageMeta) -> bool:
        assert self.ring.view(meta.image_id) is not None
        self.published.append(meta.image_id)
        return True

    def feed(self, source: int, *ids: int) -> None:
        for image_id in ids:
            assert source not in self.pipeline.parked_sources, "a parked connection is not read"
            self.pipeline.handle(MAKER.parts(image_id, SendKind.FRAME, STAMP), self.now, source)  # type: ignore[arg-type]
        self.pipeline.resume(self.now, idle=False)

    def count(self, name: str) -> int:
        return int(self.stats.counters[name].value)


@pytest.fixture
def ring() -> Iterator[ImageRing]:
    ring = ImageRing.create(f"pk-{uuid.uuid4().hex[:10]}-image", RingGeometry(H * W * 2, 64))
    yield ring
    ring.close()


def _started(rig: Rig) -> None:
    """Ids 0 and 1 arrive and the start grace passes: the window expects 2."""
    rig.feed(0, 0)
    rig.feed(1, 1)
    rig.now += 1.0
    rig.pipeline.tick(rig.now, idle=True)
    assert rig.published == [0, 1]


def test_a_connection_far_ahead_waits_for_the_one_behind(ring: ImageRing) -> None:
    rig = Rig(ring, sources=2)
    _started(rig)
    rig.feed(0, 3, 5, 7, 9, 11)  # connection 0 runs ahead ...
    assert rig.pipeline.parked_sources == {0}  # ... 11 >= 2 + 8: it waits
    assert rig.published == [0, 1]
    rig.feed(1, 2, 4, 6, 8, 10)  # connection 1 brings the ids below
    assert rig.pipeline.parked_sources == frozenset()
    rig.feed(0, 12)
    assert rig.published == list(range(13))
    assert rig.count("late_frames") == rig.count("missing_ids") == rig.count("restarts") == 0


def test_ids_no_connection_can_bring_are_given_up_at_once(ring: ImageRing) -> None:
    rig = Rig(ring, sources=2)
    _started(rig)  # the camera skipped 2 and 3: both connections end up ahead
    rig.feed(0, 4, 6, 8, 10)
    assert rig.pipeline.parked_sources == {0}  # 10 >= 2 + 8
    rig.feed(1, 5, 7, 9)
    assert rig.pipeline.parked_sources == {0}
    rig.feed(1, 11)  # both ahead: nothing can bring 2 and 3 any more
    assert rig.pipeline.parked_sources == frozenset()
    rig.feed(0, 12)
    rig.pipeline.tick(rig.now, idle=False)
    assert rig.published == [0, 1, *range(4, 13)]
    assert (rig.count("missing_ids"), rig.count("late_frames")) == (2, 0)


def test_a_parked_frame_waits_at_most_the_timeout_while_the_others_are_idle(ring: ImageRing) -> None:
    rig = Rig(ring, sources=4)
    _started(rig)
    rig.feed(2, 10)
    assert rig.pipeline.parked_sources == {2}
    rig.now += TIMEOUT / 2
    rig.pipeline.tick(rig.now, idle=True)
    assert rig.pipeline.parked_sources == {2}
    rig.now += TIMEOUT
    rig.pipeline.tick(rig.now, idle=False)  # the others are busy: only the hard timeout applies
    assert rig.pipeline.parked_sources == {2}
    rig.pipeline.tick(rig.now, idle=True)
    assert rig.pipeline.parked_sources == frozenset()
    rig.now += 10.0
    rig.pipeline.tick(rig.now, idle=True)
    assert rig.published == [0, 1, 10]
    assert rig.count("missing_ids") == 8


def test_parked_frames_go_in_before_a_camera_restart(ring: ImageRing) -> None:
    rig = Rig(ring, sources=2)
    rig.feed(0, 100)
    rig.feed(1, 101)
    rig.now += 1.0
    rig.pipeline.tick(rig.now, idle=True)
    rig.feed(0, 110)  # parked: 102..109 may still come on connection 1
    assert rig.pipeline.parked_sources == {0}
    rig.feed(1, 0)  # the camera restarted at 0: 110 was sent before it
    rig.now += 10.0
    rig.pipeline.tick(rig.now, idle=True)
    rig.pipeline.close()
    assert rig.published == [100, 101, 110, 0]
    assert rig.count("restarts") == 1


def test_one_connection_never_waits(ring: ImageRing) -> None:
    rig = Rig(ring, sources=1)
    _started(rig)
    rig.feed(0, 20)
    assert rig.pipeline.parked_sources == frozenset()
    rig.pipeline.tick(rig.now, idle=False)
    assert rig.count("missing_ids") == 11  # 2..12: the window moved to 20 - 8 + 1
    assert rig.published == [0, 1]


def test_close_lets_the_parked_frames_in(ring: ImageRing) -> None:
    rig = Rig(ring, sources=3)
    _started(rig)
    rig.feed(0, 30)
    rig.feed(1, 40)
    rig.pipeline.close()
    assert rig.published == [0, 1, 30, 40]
