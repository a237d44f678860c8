"""One image -> the 8-bit frame a page shows: region, step, contrast, histogram (numpy only).

The documented mapping (docs/web.md), which the browser tests recompute:
- the region `[x0, x0 + w) x [y0, y0 + h)` of the full image (clamped to the image) is
  sampled every `step` pixels in both directions, `step = max(1, ceil(w / max_w),
  ceil(h / max_h))`: the nearest pixel, never an average, so every shown value is a real
  pixel value; a region that fits the page is shown at full resolution (step 1);
- contrast: `lo`, `hi` are the manual min/max, or (auto) the `p_lo` and `p_hi` percentiles of
  the shown pixels (of at most `PERCENTILE_SAMPLE` of them, evenly spaced), rounded out to
  integers for integer images; `hi` is at least `lo + 1`;
- an integer pixel `v` becomes `(min(max(v, lo), hi) - lo) * 255 // (hi - lo)` (integer
  arithmetic, exact); a float pixel the same in float64, floored;
- the histogram has `HISTOGRAM_BINS` bins over [min, max] of the same sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

PERCENTILE_SAMPLE = 1 << 18
HISTOGRAM_BINS = 64
MAX_SIDE = 8192
"""Largest canvas side a page may ask for."""


@dataclass(frozen=True, slots=True)
class View:
    """What one page wants to see: a region, the canvas size that shows it, the contrast."""

    x0: int = 0
    y0: int = 0
    w: int = 1 << 30
    h: int = 1 << 30
    max_w: int = 1024
    max_h: int = 1024
    auto: bool = True
    p_lo: float = 1.0
    p_hi: float = 99.5
    lo: float = 0.0
    hi: float = 1000.0

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> View:
        """A View from a page's JSON message; ValueError naming a bad field."""
        values: dict[str, Any] = {}
        for name in ("x0", "y0", "w", "h", "max_w", "max_h"):
            if name in message:
                values[name] = _integer(message[name], name)
        for name in ("p_lo", "p_hi", "lo", "hi"):
            if name in message:
                values[name] = _number(message[name], name)
        if "auto" in message:
            if not isinstance(message["auto"], bool):
                raise ValueError(f"view field auto is {message['auto']!r}, not true or false")
            values["auto"] = message["auto"]
        view = cls(**values)
        if not (0 <= view.p_lo < view.p_hi <= 100):
            raise ValueError(
                f"percentiles must satisfy 0 <= p_lo < p_hi <= 100, got {view.p_lo}, {view.p_hi}"
            )
        if not (1 <= view.max_w <= MAX_SIDE and 1 <= view.max_h <= MAX_SIDE):
            raise ValueError(f"canvas size must be 1..{MAX_SIDE}, got {view.max_w} x {view.max_h}")
        return view


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"view field {name} is {value!r:.40}, not a number")
    return int(value)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"view field {name} is {value!r:.40}, not a number")
    return float(value)


@dataclass(frozen=True, slots=True)
class Frame:
    """An 8-bit frame and what the page needs to know about it."""

    pixels: npt.NDArray[np.uint8]
    x0: int
    y0: int
    w: int
    h: int
    step: int
    lo: float
    hi: float
    hist_min: float
    hist_max: float
    hist_counts: list[int]

    def header(self) -> dict[str, Any]:
        """The JSON-able description sent before the pixels."""
        rows, columns = self.pixels.shape
        return {
            "region": [self.x0, self.y0, self.w, self.h],
            "step": self.step,
            "size": [rows, columns],
            "lo": self.lo,
            "hi": self.hi,
            "hist": {"min": self.hist_min, "max": self.hist_max, "counts": self.hist_counts},
        }


def region_of(shape: tuple[int, int], view: View) -> tuple[int, int, int, int, int]:
    """(x0, y0, w, h, step) of `view` on an image of `shape` (rows, columns), clamped."""
    height, width = shape
    x0 = min(max(view.x0, 0), width - 1)
    y0 = min(max(view.y0, 0), height - 1)
    w = min(max(view.w, 1), width - x0)
    h = min(max(view.h, 1), height - y0)
    step = max(1, -(-w // view.max_w), -(-h // view.max_h))
    return x0, y0, w, h, step


def _sample(shown: npt.NDArray[Any]) -> npt.NDArray[Any]:
    flat = shown.reshape(-1) if shown.flags.c_contiguous else np.ascontiguousarray(shown).reshape(-1)
    if flat.size <= PERCENTILE_SAMPLE:
        return flat
    return flat[:: -(-flat.size // PERCENTILE_SAMPLE)]


def contrast_limits(sample: npt.NDArray[Any], view: View, integer: bool) -> tuple[float, float]:
    """(lo, hi) of the mapping: manual, or the percentiles of `sample` (see the module doc)."""
    if view.auto:
        low, high = (float(v) for v in np.percentile(sample, [view.p_lo, view.p_hi]))
    else:
        low, high = view.lo, view.hi
    if integer:
        low, high = float(math.floor(low)), float(math.ceil(high))
        if high < low + 1:
            high = low + 1
    elif not high > low:
        high = low + 1e-9 if low == 0 else low + abs(low) * 1e-9
    return low, high


def to_8bit(shown: npt.NDArray[Any], lo: float, hi: float) -> npt.NDArray[np.uint8]:
    """The documented 8-bit mapping of `shown` between lo and hi."""
    if shown.dtype.kind in "iu":
        wide = np.int64 if shown.dtype.itemsize >= 4 else np.int32
        low, high = int(lo), int(hi)
        values = np.clip(shown.astype(wide), low, high)
        values -= low
        values *= 255
        values //= high - low
        mapped: npt.NDArray[np.uint8] = values.astype(np.uint8)
        return mapped
    scaled = (np.clip(shown.astype(np.float64), lo, hi) - lo) * (255.0 / (hi - lo))
    return np.floor(scaled).astype(np.uint8)


def render(image: npt.NDArray[Any], view: View) -> Frame:
    """The frame of `image` for `view` (see the module docstring for the mapping)."""
    rows, columns = image.shape
    x0, y0, w, h, step = region_of((rows, columns), view)
    shown = image[y0 : y0 + h : step, x0 : x0 + w : step]
    sample = _sample(shown)
    integer = image.dtype.kind in "iu"
    lo, hi = contrast_limits(sample, view, integer)
    smallest, largest = float(sample.min()), float(sample.max())
    top = largest if largest > smallest else smallest + 1
    counts, _ = np.histogram(sample, bins=HISTOGRAM_BINS, range=(smallest, top))
    return Frame(
        pixels=np.ascontiguousarray(to_8bit(shown, lo, hi)),
        x0=x0,
        y0=y0,
        w=w,
        h=h,
        step=step,
        lo=lo,
        hi=hi,
        hist_min=smallest,
        hist_max=top,
        hist_counts=[int(c) for c in counts],
    )


def pixel_at(image: npt.NDArray[Any], x: int, y: int) -> float | None:
    """The full-resolution value at column x, row y; None outside the image."""
    rows, columns = image.shape
    if not (0 <= x < columns and 0 <= y < rows):
        return None
    return float(image[y, x])
