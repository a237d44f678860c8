"""The web service's frame preparation: region, step, the documented 8-bit mapping, the
histogram, the frame message, and refusals of bad view requests (numpy only, no browser)."""

from __future__ import annotations

import numpy as np
import pytest

from stddaq_fake_camera.frames import FramePattern
from stddaq_web.frame_message import decode_frame, encode_frame
from stddaq_web.health import writer_lag
from stddaq_web.prometheus_text import parse_metrics
from stddaq_web.render import HISTOGRAM_BINS, View, pixel_at, region_of, render


def test_a_region_that_fits_is_shown_at_full_resolution() -> None:
    assert region_of((2048, 2048), View(x0=100, y0=200, w=512, h=256, max_w=800, max_h=600)) == (
        100,
        200,
        512,
        256,
        1,
    )


def test_a_large_region_is_sampled_every_step_pixels() -> None:
    assert region_of((2048, 2048), View(max_w=800, max_h=800)) == (0, 0, 2048, 2048, 3)


def test_a_region_past_the_edge_is_clamped() -> None:
    assert region_of((100, 200), View(x0=-5, y0=90, w=500, h=500, max_w=1000, max_h=1000)) == (
        0,
        90,
        200,
        10,
        1,
    )


def test_the_manual_mapping_is_the_documented_one() -> None:
    frame = FramePattern((64, 96), np.dtype("<u2")).frame(12345)
    shown = render(frame, View(auto=False, lo=90, hi=120, max_w=48, max_h=32))
    assert shown.step == 2 and (shown.lo, shown.hi) == (90, 120)
    sampled = frame[::2, ::2].astype(np.int64)
    expected = (np.clip(sampled, 90, 120) - 90) * 255 // 30
    assert np.array_equal(shown.pixels, expected.astype(np.uint8))


def test_auto_contrast_uses_the_percentiles_rounded_out() -> None:
    frame = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100)
    shown = render(frame, View(p_lo=10, p_hi=90))
    low, high = np.percentile(frame, [10, 90])
    assert (shown.lo, shown.hi) == (np.floor(low), np.ceil(high))
    assert shown.pixels.min() == 0 and shown.pixels.max() == 255
    assert sum(shown.hist_counts) == frame.size and len(shown.hist_counts) == HISTOGRAM_BINS


def test_a_flat_image_does_not_divide_by_zero() -> None:
    shown = render(np.full((10, 10), 7, np.uint16), View())
    assert shown.hi == shown.lo + 1 and not shown.pixels.any()


def test_a_float_image_maps_too() -> None:
    shown = render(np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10), View(auto=False, lo=0, hi=1))
    assert shown.pixels[0, 0] == 0 and shown.pixels[-1, -1] == 255


def test_the_frame_message_round_trips() -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    header, back = decode_frame(encode_frame({"size": [3, 4], "image_id": 9}, pixels))
    assert header["image_id"] == 9 and np.array_equal(back, pixels)
    with pytest.raises(ValueError, match="pixels"):
        decode_frame(encode_frame({"size": [3, 5]}, pixels))


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ({"x0": "left"}, "x0"),
        ({"auto": "yes"}, "auto"),
        ({"p_lo": 50, "p_hi": 10}, "percentiles"),
        ({"max_w": 0}, "canvas size"),
        ({"hi": float("nan")}, "hi"),
    ],
)
def test_a_bad_view_is_refused_naming_the_field(message: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        View.from_message(message)


def test_the_pixel_under_the_pointer_is_the_full_resolution_value() -> None:
    frame = np.arange(20, dtype=np.uint16).reshape(4, 5)
    assert pixel_at(frame, 3, 2) == 13.0
    assert pixel_at(frame, 5, 0) is None


def test_metrics_text_is_read_and_summed_over_labels() -> None:
    text = "\n".join(
        [
            "# HELP x",
            'stddaq_receiver_frames_received_total{detector="d"} 12.0',
            'stddaq_writer_images_written_total{detector="d",index="0"} 3',
            'stddaq_writer_images_written_total{detector="d",index="1"} 4',
            "broken line",
        ]
    )
    values = parse_metrics(text)
    assert values["stddaq_receiver_frames_received_total"] == 12
    assert values["stddaq_writer_images_written_total"] == 7


def test_writer_lag_follows_the_round_robin() -> None:
    # 7 images dealt to 2 writers: writer 0 got ids 0, 2, 4, 6 and writer 1 got 1, 3, 5.
    assert writer_lag(7, 2, 0, 3, 0) == 1
    assert writer_lag(7, 2, 1, 2, 1) == 0
