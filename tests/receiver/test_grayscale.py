"""Grayscale conversion rules (stddaq_receiver.grayscale)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stddaq_receiver.grayscale import FrameRejected, plan_conversion

H, W = 6, 5


def _convert(frame: np.ndarray, out_dtype: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    plan = plan_conversion(frame.dtype, shape or frame.shape, out_dtype, H, W)
    out = bytearray(H * W * np.dtype(out_dtype).itemsize + 16)  # a slot may be larger
    written = plan.convert_into(frame.tobytes(), out)
    assert written == H * W * np.dtype(out_dtype).itemsize
    return np.frombuffer(out, dtype=out_dtype, count=H * W).reshape(H, W)


def test_same_type_is_a_plain_copy() -> None:
    frame = np.arange(H * W, dtype="<u2").reshape(H, W)
    plan = plan_conversion(frame.dtype, frame.shape, "<u2", H, W)
    assert plan.is_copy
    np.testing.assert_array_equal(_convert(frame, "<u2"), frame)


def test_big_endian_input_is_byte_swapped() -> None:
    frame = (np.arange(H * W).reshape(H, W) * 300).astype(">u2")
    assert not plan_conversion(frame.dtype, frame.shape, "<u2", H, W).is_copy
    np.testing.assert_array_equal(_convert(frame, "<u2"), frame.astype("<u2"))


def test_flat_vector_of_the_right_length_is_the_image() -> None:
    frame = np.arange(H * W, dtype="<u1")
    np.testing.assert_array_equal(_convert(frame, "<u1"), frame.reshape(H, W))


def test_narrowing_clips_integers_without_scaling() -> None:
    frame = np.array([0, 1, 254, 255, 256, 65535] * W, dtype="<u2").reshape(H, W)
    out = _convert(frame, "<u1")
    np.testing.assert_array_equal(out, np.minimum(frame, 255).astype("<u1"))


def test_negative_signed_values_clip_to_zero() -> None:
    frame = np.array([-32768, -1, 0, 1, 32767, 5] * W, dtype="<i2").reshape(H, W)
    out = _convert(frame, "<u2")
    np.testing.assert_array_equal(out, np.clip(frame, 0, None).astype("<u2"))


def test_floats_round_half_even_and_clip_with_nan_as_zero() -> None:
    values = [0.4, 0.5, 1.5, 2.5, -3.0, 70000.0, np.nan, np.inf, -np.inf, 255.6]
    frame = np.resize(np.array(values, dtype=">f8"), (H, W))
    out = _convert(frame, "<u2")
    expected = np.resize(np.array([0, 0, 2, 2, 0, 65535, 0, 65535, 0, 256], dtype="<u2"), (H, W))
    np.testing.assert_array_equal(out, expected)


def test_interleaved_colour_becomes_luminance() -> None:
    rgb = np.zeros((H, W, 3), dtype="<u1")
    rgb[..., 0] = 200
    rgb[..., 1] = 100
    rgb[..., 2] = 50
    out = _convert(rgb, "<u1")
    assert (out == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)).all()


def test_colour_planes_become_luminance() -> None:
    planes = np.zeros((3, H, W), dtype="<u2")
    planes[0] = 1000
    planes[1] = 2000
    planes[2] = 3000
    out = _convert(planes, "<u2")
    assert (out == round(0.299 * 1000 + 0.587 * 2000 + 0.114 * 3000)).all()


@pytest.mark.parametrize(
    ("shape", "reason"),
    [((W, H), "shape"), ((H, W, 4), "shape"), ((H * W + 1,), "shape"), ((H, W, 3, 1), "shape")],
)
def test_wrong_shapes_are_rejected_with_a_reason(shape: tuple[int, ...], reason: str) -> None:
    with pytest.raises(FrameRejected) as caught:
        plan_conversion(np.dtype("<u2"), shape, "<u2", H, W)
    assert caught.value.reason == reason
    assert f"{H} x {W}" in caught.value.message


@pytest.mark.parametrize("dtype", ["?", "c8", "S4", "U1"])
def test_non_numeric_types_are_rejected(dtype: str) -> None:
    with pytest.raises(FrameRejected) as caught:
        plan_conversion(np.dtype(dtype), (H, W), "<u2", H, W)
    assert caught.value.reason == "dtype"


def test_a_value_of_the_wrong_size_is_rejected_and_nothing_written() -> None:
    plan = plan_conversion(np.dtype("<u2"), (H, W), "<u2", H, W)
    out = bytearray(b"\xaa" * H * W * 2)
    with pytest.raises(FrameRejected) as caught:
        plan.convert_into(b"\x00" * (H * W * 2 - 2), out)
    assert caught.value.reason == "size"
    assert out == bytearray(b"\xaa" * H * W * 2)


_INT_DTYPES = st.sampled_from(["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8"]).flatmap(
    lambda kind: st.sampled_from(["<" + kind, ">" + kind] if kind[1] != "1" else [kind])
)


@settings(max_examples=150, deadline=None)
@given(
    frame=_INT_DTYPES.flatmap(lambda dt: hnp.arrays(np.dtype(dt), (H, W))),
    out_dtype=st.sampled_from(["<u1", "<u2", "<u4"]),
)
def test_integers_are_kept_or_clipped_never_wrapped(frame: np.ndarray, out_dtype: str) -> None:
    out = _convert(frame, out_dtype)
    info = np.iinfo(out_dtype)
    as_python = [[min(max(int(v), info.min), info.max) for v in row] for row in frame]
    assert out.tolist() == as_python


@settings(max_examples=100, deadline=None)
@given(
    frame=hnp.arrays(np.dtype("<f4"), (H, W), elements=st.floats(-1e6, 1e6, width=32)),
    out_dtype=st.sampled_from(["<u1", "<u2", "<u4"]),
)
def test_floats_are_rounded_and_clipped(frame: np.ndarray, out_dtype: str) -> None:
    out = _convert(frame, out_dtype)
    info = np.iinfo(out_dtype)
    expected = [[min(max(round(float(v)), info.min), info.max) for v in row] for row in frame]
    assert out.tolist() == expected
