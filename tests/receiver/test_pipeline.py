"""The receiver's per-frame logic in-process (no sockets): counters for every bad input."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from stddaq_common.bus.metadata import ImageMeta
from stddaq_common.ring.geometry import RingGeometry
from stddaq_common.ring.image_ring import ImageRing
from stddaq_common.runtime.stats import Stats
from stddaq_common.wire.bsread import BsreadEncoder, ChannelSpec
from stddaq_fake_camera.frames import FramePattern
from stddaq_fake_camera.messages import MessageMaker
from stddaq_fake_camera.schedule import SendKind
from stddaq_receiver.inputs import Array10Frames, BsreadFrames
from stddaq_receiver.pipeline import ReceiverCounters, ReceiverPipeline
from stddaq_receiver.reorder import ReorderWindow
from stddaq_receiver.slot_writer import SlotWriter

H, W = 8, 12
N_SLOTS = 1000
U2 = np.dtype("<u2")
STAMP = (1_700_000_000, 1)


class Harness:
    """A pipeline writing into a real (small) ring and publishing into a list."""

    def __init__(self, ring: ImageRing, input_format: str = "bsread") -> None:
        self.ring = ring
        self.published: list[ImageMeta] = []
        self.stats = Stats("receiver", "test", period=60)
        decoder = BsreadFrames(H, W, U2) if input_format == "bsread" else Array10Frames(True)
        self.pipeline = ReceiverPipeline(
            decoder, SlotWriter(ring, H, W, U2), ReorderWindow(size=16, timeout=0.5),
            self._publish, ReceiverCounters.register(self.stats),
        )
        self.now = 0.0

    def _publish(self, meta: ImageMeta) -> bool:
        assert self.ring.view(meta.image_id) is not None, "published an image its slot does not hold"
        self.published.append(meta)
        return True

    def feed(self, parts: list[object]) -> None:
        self.pipeline.handle(parts, self.now)  # type: ignore[arg-type]

    def settle(self) -> list[int]:
        self.now += 10.0
        self.pipeline.tick(self.now, idle=True)
        return [meta.image_id for meta in self.published]

    def count(self, name: str) -> int:
        return int(self.stats.counters[name].value)


@pytest.fixture
def ring() -> Iterator[ImageRing]:
    ring = ImageRing.create(f"pt-{uuid.uuid4().hex[:10]}-image", RingGeometry(H * W * 2, N_SLOTS))
    yield ring
    ring.close()


def _maker(**options: object) -> MessageMaker:
    return MessageMaker(FramePattern((H, W), U2), **options)  # type: ignore[arg-type]


def test_good_frames_are_written_and_published_in_order(ring: ImageRing) -> None:
    harness = Harness(ring)
    maker = _maker()
    for pulse_id in (3, 1, 2, 0):
        harness.feed(maker.parts(pulse_id, SendKind.FRAME, STAMP))
    assert harness.settle() == [0, 1, 2, 3]
    meta = harness.published[0]
    assert (meta.height, meta.width, meta.size) == (H, W, H * W * 2)
    view = ring.view(2)
    assert view is not None
    assert np.array_equal(view.array(U2, (H, W)), FramePattern((H, W), U2).frame(2))
    assert harness.count("frames_published") == 4


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ([b"not json", b"{}", b"", b""], "rejected_json"),
        ([b"only one"], "rejected_parts"),
        ([b'{"htype": "bsr_m-1.1"}', b"{}", b"", b""], "rejected_header"),
        ([b'[1, 2]', b"{}", b"", b""], "rejected_json"),
    ],
)
def test_malformed_messages_are_counted_not_raised(ring: ImageRing, parts: list[object], reason: str) -> None:
    harness = Harness(ring)
    harness.feed(parts)
    assert harness.count(reason) == 1
    assert harness.settle() == []


def _bsread(channel: ChannelSpec, value: object, with_type_and_shape: bool = True) -> list[object]:
    encoder = BsreadEncoder([channel], with_type_and_shape=with_type_and_shape)
    return list(encoder.encode(0, STAMP, [value]))


def test_a_missing_value_is_rejected(ring: ImageRing) -> None:
    harness = Harness(ring)
    harness.feed(_bsread(ChannelSpec.for_image("img", H, W), None))
    assert harness.count("rejected_missing") == 1


def test_a_bool_image_is_rejected_as_dtype(ring: ImageRing) -> None:
    harness = Harness(ring)
    harness.feed(_bsread(ChannelSpec.for_image("img", H, W, "bool"), np.zeros((H, W), bool)))
    assert harness.count("rejected_dtype") == 1


def test_a_scalar_channel_is_rejected_as_shape(ring: ImageRing) -> None:
    harness = Harness(ring)
    harness.feed(_bsread(ChannelSpec("img", "float64", (1,)), np.zeros(1)))
    assert harness.count("rejected_shape") == 1


def test_a_value_of_the_wrong_size_without_type_and_shape_is_rejected(ring: ImageRing) -> None:
    harness = Harness(ring)
    value = np.zeros((H + 1, W), U2)
    harness.feed(_bsread(ChannelSpec.for_image("img", H + 1, W), value, with_type_and_shape=False))
    assert harness.count("rejected_size") == 1


@pytest.mark.parametrize("compression", ["bitshuffle_lz4", "lz4"])
def test_a_corrupt_compressed_value_is_rejected_and_its_slot_never_handed_out(
    ring: ImageRing, compression: str
) -> None:
    harness = Harness(ring)
    maker = _maker(compression=compression)
    parts = maker.parts(5, SendKind.FRAME, STAMP)
    value = bytearray(memoryview(parts[2]))  # type: ignore[arg-type]
    value[len(value) // 2 :] = b"\xff" * (len(value) - len(value) // 2)
    parts[2] = bytes(value)
    harness.feed(parts)
    harness.feed(maker.parts(6, SendKind.FRAME, STAMP))
    assert harness.count("rejected_compression") + harness.count("rejected_size") == 1
    assert harness.settle() == [6]
    assert ring.view(5) is None
    assert harness.count("missing_ids") == 0  # rejected, not missing


def test_a_truncated_compressed_value_is_rejected_before_touching_the_slot(ring: ImageRing) -> None:
    harness = Harness(ring)
    maker = _maker(compression="bitshuffle_lz4")
    parts = maker.parts(7, SendKind.FRAME, STAMP)
    parts[2] = bytes(memoryview(parts[2])[:8])  # type: ignore[arg-type]
    harness.feed(parts)
    assert harness.count("rejected_compression") == 1


def test_duplicates_late_frames_and_restarts_are_counted(ring: ImageRing) -> None:
    harness = Harness(ring)
    maker = _maker()
    for pulse_id in (100, 101, 101, 103):
        harness.feed(maker.parts(pulse_id, SendKind.FRAME, STAMP))
    assert harness.settle() == [100, 101, 103]
    harness.feed(maker.parts(102, SendKind.FRAME, STAMP))  # given up already
    harness.feed(maker.parts(0, SendKind.FRAME, STAMP))  # more than a window back: restart
    assert harness.settle() == [100, 101, 103, 0]
    assert (harness.count("duplicates"), harness.count("late_frames")) == (1, 1)
    assert (harness.count("missing_ids"), harness.count("restarts")) == (1, 1)


def test_a_waiting_image_is_published_before_its_slot_is_reused(ring: ImageRing) -> None:
    harness = Harness(ring)
    maker = _maker()
    for pulse_id in (0, 2):
        harness.feed(maker.parts(pulse_id, SendKind.FRAME, STAMP))
    harness.settle()
    harness.feed(maker.parts(4, SendKind.FRAME, STAMP))  # waits for 3
    harness.feed(maker.parts(4 + N_SLOTS, SendKind.FRAME, STAMP))  # same slot as 4
    assert [meta.image_id for meta in harness.published] == [0, 2, 4]  # checked valid when published


def test_array10_frames_go_through_the_same_path(ring: ImageRing) -> None:
    harness = Harness(ring, input_format="array-1.0")
    maker = MessageMaker(FramePattern((H, W), np.dtype(">u2")), input_format="array-1.0")
    for pulse_id in (1, 0):
        harness.feed(maker.parts(pulse_id, SendKind.FRAME, STAMP))
    harness.feed(maker.parts(2, SendKind.GARBAGE, STAMP))
    assert harness.settle() == [0, 1]
    view = ring.view(1)
    assert view is not None
    assert np.array_equal(view.array(U2, (H, W)), FramePattern((H, W), U2).frame(1))
    assert harness.count("rejected_parts") == 1
