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


# --- values placed straight into their slot (the zmtp reader's path) -----------------------


def _land(harness: Harness, parts: list[object], source: int = 0) -> bool:
    """Feed a message the way the zmtp reader does: headers, `place`, the value into what it
    gave (if anything), then `message`. True if the value went straight into a slot."""
    pipeline = harness.pipeline
    value = bytes(memoryview(parts[2]))  # type: ignore[arg-type]
    destination = pipeline.place(source, parts[:2], len(value), harness.now)  # type: ignore[arg-type]
    if destination is not None:
        destination[:] = value
        parts = [*parts[:2], destination, *parts[3:]]
    pipeline.message(source, parts, harness.now)  # type: ignore[arg-type]
    return destination is not None


def test_a_placed_value_lands_in_its_slot_and_is_published_in_order(ring: ImageRing) -> None:
    harness = Harness(ring)
    maker = _maker()
    landed = [_land(harness, maker.parts(pulse_id, SendKind.FRAME, STAMP)) for pulse_id in (2, 0, 1)]
    assert landed == [True, True, True]
    assert harness.settle() == [0, 1, 2]
    for pulse_id in (0, 1, 2):
        view = ring.view(pulse_id)
        assert view is not None
        assert np.array_equal(view.array(U2, (H, W)), FramePattern((H, W), U2).frame(pulse_id))
    assert harness.count("frames_received") == harness.count("frames_published") == 3
    assert harness.published[0].detail is not None


def test_frames_that_cannot_land_take_the_ordinary_path(ring: ImageRing) -> None:
    harness = Harness(ring)
    compressed = _maker(compression="bitshuffle_lz4").parts(0, SendKind.FRAME, STAMP)
    big_endian = MessageMaker(FramePattern((H, W), np.dtype(">u2"))).parts(1, SendKind.FRAME, STAMP)
    wrong_shape = _maker().parts(2, SendKind.WRONG_SHAPE, STAMP)
    assert [_land(harness, parts) for parts in (compressed, big_endian, wrong_shape)] == [False] * 3
    assert harness.settle() == [0, 1]
    assert harness.count("rejected_shape") == 1
    view = ring.view(1)
    assert view is not None and np.array_equal(view.array(U2, (H, W)), FramePattern((H, W), U2).frame(1))


def test_a_placed_duplicate_never_touches_the_published_slot(ring: ImageRing) -> None:
    harness = Harness(ring)
    maker = _maker()
    assert _land(harness, maker.parts(0, SendKind.FRAME, STAMP))
    assert harness.settle() == [0]
    assert not _land(harness, maker.parts(0, SendKind.FRAME, STAMP))  # a duplicate: thrown away
    assert harness.settle() == [0]
    assert harness.count("duplicates") == 1 and harness.count("frames_received") == 2
    view = ring.view(0)
    assert view is not None and view.still_valid()


def test_a_bad_rest_or_a_broken_connection_rejects_the_placed_frame(ring: ImageRing) -> None:
    harness = Harness(ring)
    maker = _maker()
    bad_stamp = maker.parts(0, SendKind.FRAME, STAMP)
    bad_stamp[3] = b"12345"
    assert _land(harness, bad_stamp)
    extra_part = [*maker.parts(1, SendKind.FRAME, STAMP), b"extra"]
    assert _land(harness, extra_part)
    parts = maker.parts(2, SendKind.FRAME, STAMP)
    assert harness.pipeline.place(0, parts[:2], H * W * 2, harness.now) is not None  # type: ignore[arg-type]
    harness.pipeline.abort(0, "connection 0 broke mid-message")
    assert _land(harness, maker.parts(3, SendKind.FRAME, STAMP))
    assert harness.settle() == [3]
    assert (harness.count("rejected_size"), harness.count("rejected_parts")) == (1, 2)
    assert harness.count("missing_ids") == 0  # rejected, not missing
    assert [ring.view(pulse_id) for pulse_id in (0, 1, 2)] == [None, None, None]


def test_a_frame_a_window_ahead_on_one_of_several_connections_is_not_placed(ring: ImageRing) -> None:
    harness = Harness(ring)
    harness.pipeline = ReceiverPipeline(
        BsreadFrames(H, W, U2), SlotWriter(ring, H, W, U2), ReorderWindow(size=16, timeout=0.5),
        harness._publish, ReceiverCounters.register(harness.stats), sources=2,
    )
    maker = _maker()
    assert _land(harness, maker.parts(0, SendKind.FRAME, STAMP), source=0)
    assert not _land(harness, maker.parts(40, SendKind.FRAME, STAMP), source=1)  # parked
    assert harness.pipeline.parked_sources == frozenset({1})
    assert _land(harness, maker.parts(1, SendKind.FRAME, STAMP), source=0)
    assert harness.settle()[:2] == [0, 1]
