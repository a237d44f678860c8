"""Decoder threads: compressed frames decompressed in parallel, published in order, exact."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Literal

import numpy as np
import pytest

from stddaq_common.bus.metadata import ImageMeta
from stddaq_common.ring.geometry import RingGeometry
from stddaq_common.ring.image_ring import ImageRing
from stddaq_common.runtime.stats import Stats
from stddaq_fake_camera.frames import FramePattern
from stddaq_fake_camera.messages import MessageMaker
from stddaq_fake_camera.schedule import SendKind
from stddaq_receiver.decode_pool import DecodePool
from stddaq_receiver.inputs import BsreadFrames
from stddaq_receiver.pipeline import ReceiverCounters, ReceiverPipeline
from stddaq_receiver.reorder import ReorderWindow
from stddaq_receiver.slot_writer import SlotWriter

H, W = 256, 320
N_SLOTS = 64
U2 = np.dtype("<u2")
STAMP = (1_700_000_000, 1)
PATTERN = FramePattern((H, W), U2, 97)


class PoolHarness:
    """A pipeline with decoder threads writing into a real ring, publishing into a list."""

    def __init__(self, ring: ImageRing, workers: int = 2) -> None:
        self.ring = ring
        self.published: list[ImageMeta] = []
        self.stats = Stats("receiver", "test", period=60)
        self.pool = DecodePool(workers)
        self.pipeline = ReceiverPipeline(
            BsreadFrames(H, W, U2), SlotWriter(ring, H, W, U2), ReorderWindow(size=16, timeout=0.5),
            self._publish, ReceiverCounters.register(self.stats), self.pool,
        )
        self.now = 0.0

    def _publish(self, meta: ImageMeta) -> bool:
        view = self.ring.view(meta.image_id)
        assert view is not None, "published an image its slot does not hold"
        assert np.array_equal(view.array(U2, (H, W)), PATTERN.frame(meta.image_id))
        self.published.append(meta)
        return True

    def feed(self, parts: list[object]) -> None:
        self.pipeline.handle(parts, self.now)  # type: ignore[arg-type]
        self.pipeline.collect(self.now)

    def settle(self) -> list[int]:
        deadline = time.monotonic() + 30
        while self.pipeline.in_flight and time.monotonic() < deadline:
            self.pipeline.collect(self.now)
            time.sleep(0.001)
        self.now += 10.0
        self.pipeline.tick(self.now, idle=True)
        return [meta.image_id for meta in self.published]

    def count(self, name: str) -> int:
        return int(self.stats.counters[name].value)


@pytest.fixture
def ring() -> Iterator[ImageRing]:
    ring = ImageRing.create(f"dp-{uuid.uuid4().hex[:10]}-image", RingGeometry(H * W * 2, N_SLOTS))
    yield ring
    ring.close()


@pytest.mark.parametrize("compression", ["bitshuffle_lz4", "lz4"])
def test_frames_decoded_in_threads_are_published_in_order_and_exact(
    ring: ImageRing, compression: Literal["bitshuffle_lz4", "lz4"]
) -> None:
    harness = PoolHarness(ring)
    maker = MessageMaker(PATTERN, compression=compression)
    order = [1, 0, 3, 2, 5, 4, *range(6, 40)]
    for pulse_id in order:
        harness.feed(maker.parts(pulse_id, SendKind.FRAME, STAMP))
        assert harness.pipeline.in_flight <= harness.pool.max_in_flight
    assert harness.settle() == list(range(40))  # each checked pixel by pixel when published
    assert harness.count("frames_published") == 40
    assert harness.count("image_bytes_written") == 40 * H * W * 2
    assert ring.writes_in_progress == 0
    harness.pipeline.close()


def test_a_corrupt_value_in_a_decoder_thread_is_rejected_and_never_handed_out(ring: ImageRing) -> None:
    harness = PoolHarness(ring)
    maker = MessageMaker(PATTERN, compression="bitshuffle_lz4")
    for pulse_id in range(3):
        parts = maker.parts(pulse_id, SendKind.FRAME, STAMP)
        if pulse_id == 1:
            value = bytearray(memoryview(parts[2]))  # type: ignore[arg-type]
            value[len(value) // 2 :] = b"\xff" * (len(value) - len(value) // 2)
            parts[2] = bytes(value)
        harness.feed(parts)
    assert harness.settle() == [0, 2]
    assert harness.count("rejected_compression") + harness.count("rejected_size") == 1
    assert harness.count("rejected_internal") == 0
    assert ring.view(1) is None and ring.writes_in_progress == 0
    harness.pipeline.close()


def test_a_slot_still_being_decoded_is_waited_for_not_written_twice(ring: ImageRing) -> None:
    """id and id + n_slots share a slot: the second write starts only after the first."""
    harness = PoolHarness(ring)
    maker = MessageMaker(PATTERN, compression="bitshuffle_lz4")
    for pulse_id in (0, 3, 3 + N_SLOTS, 4 + N_SLOTS):  # the window moves past 3 (16 ids)
        harness.pipeline.handle(maker.parts(pulse_id, SendKind.FRAME, STAMP), harness.now)  # type: ignore[arg-type]
    published = harness.settle()
    assert published[-2:] == [3 + N_SLOTS, 4 + N_SLOTS]
    assert harness.count("rejected_internal") == 0
    view = ring.view(3 + N_SLOTS)
    assert view is not None and np.array_equal(view.array(U2, (H, W)), PATTERN.frame(3 + N_SLOTS))
    harness.pipeline.close()


def test_close_publishes_the_frames_still_in_the_decoder_threads(ring: ImageRing) -> None:
    harness = PoolHarness(ring, workers=1)
    maker = MessageMaker(PATTERN, compression="bitshuffle_lz4")
    harness.now = 0.0
    for pulse_id in range(5):
        harness.pipeline.handle(maker.parts(pulse_id, SendKind.FRAME, STAMP), harness.now)  # type: ignore[arg-type]
    harness.pipeline.close()
    assert [meta.image_id for meta in harness.published] == list(range(5))
    assert harness.pipeline.in_flight == 0 and ring.writes_in_progress == 0
