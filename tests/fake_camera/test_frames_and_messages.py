"""Deterministic frames and the messages the fake camera builds (decoded with stddaq_common)."""

from __future__ import annotations

import numpy as np
import pytest

from stddaq_common.wire.array10 import decode_array10
from stddaq_common.wire.bsread import BsreadDecoder, decode_value
from stddaq_common.wire.errors import WireFormatError
from stddaq_fake_camera.frames import FramePattern, expected_frame
from stddaq_fake_camera.messages import MessageMaker
from stddaq_fake_camera.schedule import SendKind

SHAPE = (16, 24)


def test_frames_are_deterministic_distinct_and_zero_copy() -> None:
    pattern = FramePattern(SHAPE, np.dtype("<u2"), period=101)
    frame = pattern.frame(5)
    assert frame.shape == SHAPE and frame.dtype == np.dtype("<u2")
    assert not frame.flags.writeable
    assert np.shares_memory(frame, pattern.frame(6))
    assert np.array_equal(frame, expected_frame(5, SHAPE, "<u2", period=101))
    assert not np.array_equal(frame, pattern.frame(6))
    assert np.array_equal(frame, pattern.frame(5 + 101))
    assert 80 < frame.mean() < 120  # Poisson(100) noise


def test_big_endian_and_small_types_hold_the_same_counts() -> None:
    big = FramePattern(SHAPE, np.dtype(">u2")).frame(3)
    little = FramePattern(SHAPE, np.dtype("<u2")).frame(3)
    assert np.array_equal(big, little)
    assert FramePattern(SHAPE, np.dtype("u1")).frame(3).max() <= 255


@pytest.mark.parametrize("compression", ["none", "bitshuffle_lz4", "lz4"])
@pytest.mark.parametrize("with_type_and_shape", [True, False])
def test_bsread_frames_decode_to_the_pattern(compression: str, with_type_and_shape: bool) -> None:
    pattern = FramePattern(SHAPE, np.dtype("<u2"), period=50)
    maker = MessageMaker(pattern, compression=compression,  # type: ignore[arg-type]
                         with_type_and_shape=with_type_and_shape)
    decoder = BsreadDecoder(default_type="uint16", default_shape=(SHAPE[1], SHAPE[0]))
    for pulse_id in (0, 7, 49, 50):
        message = decoder.decode(maker.parts(pulse_id, SendKind.FRAME, (1_700_000_000, 5)))
        assert message.pulse_id == pulse_id
        assert message.global_timestamp == (1_700_000_000, 5)
        value = decode_value(message.channels[0], message.values[0])
        assert np.array_equal(value, pattern.frame(pulse_id))


def test_wrong_shape_frames_have_one_extra_row() -> None:
    maker = MessageMaker(FramePattern(SHAPE, np.dtype("<u2")))
    message = BsreadDecoder().decode(maker.parts(3, SendKind.WRONG_SHAPE, (0, 0)))
    assert message.channels[0].image_shape == (SHAPE[0] + 1, SHAPE[1])


@pytest.mark.parametrize("output_format", ["bsread", "array-1.0"])
def test_garbage_messages_are_rejected_by_the_decoders(output_format: str) -> None:
    maker = MessageMaker(FramePattern(SHAPE, np.dtype("<u2")), input_format=output_format)  # type: ignore[arg-type]
    kinds = set()
    for pulse_id in (30, 31, 32):
        parts = maker.parts(pulse_id, SendKind.GARBAGE, (0, 0))
        with pytest.raises(WireFormatError) as caught:
            if output_format == "bsread":
                BsreadDecoder().decode(parts)
            else:
                decode_array10(parts)
        kinds.add(caught.value.kind)
    assert len(kinds) == 3


def test_array10_frames_carry_the_id_and_pixels() -> None:
    pattern = FramePattern(SHAPE, np.dtype(">u2"))
    maker = MessageMaker(pattern, input_format="array-1.0")
    header, data = decode_array10(maker.parts(9, SendKind.FRAME, (0, 0)))
    assert header.frame == 9
    assert np.array_equal(header.array(data), pattern.frame(9))


def test_array10_refuses_compression() -> None:
    with pytest.raises(ValueError, match="raw pixels only"):
        MessageMaker(FramePattern(SHAPE, np.dtype("<u2")), input_format="array-1.0", compression="lz4")
