"""Grayscale conversion: a camera frame of any pixel type and layout -> the config's image.

Pure numpy, no sockets. A `Conversion` is planned once per input layout (pixel type,
byte order, shape) and then applied to every frame of that layout straight into the
ring slot.

Rules (the output pixel type is the config's: uint8/16/32 from `bit_depth`):

* Shape: the input must hold exactly the config's H x W pixels, as a 2-D image (H, W),
  a flat row-major vector of H*W pixels, a colour image (H, W, 3) (interleaved RGB) or
  three colour planes (3, H, W). Anything else is rejected, never written half.
* Same pixel type and byte order as the output: one memcpy into the slot.
* Integer input: values are kept as they are; values outside the output range are
  clipped to it (negative -> 0, above the maximum -> the maximum). No scaling, so a
  12-bit camera in a 16-bit config keeps its counts exactly. Widening and byte swapping
  are exact.
* Float input into an integer output: rounded to the nearest integer (ties to even),
  NaN -> 0, then clipped like integers (+inf -> maximum, -inf -> 0).
* Colour: luminance Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601) computed in float64,
  then the float rule above.
* Float output (float32 rings): a plain cast (large integers may lose precision).
* Types that are not integers or floats (bool, complex, strings) are rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

from stddaq_common.wire.byte_views import byte_view, writable_byte_view

LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G and B."""

ConversionKind = Literal["copy", "cast", "clip", "round", "luminance"]
Layout = Literal["gray", "rgb_interleaved", "rgb_planar"]


class FrameRejected(Exception):
    """A frame that cannot become the config's image; `reason` names the counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _value_range(dtype: np.dtype[np.generic]) -> tuple[float, float]:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)  # type: ignore[type-var]
        return float(info.min), float(info.max)
    finfo = np.finfo(dtype)  # type: ignore[type-var]
    return float(finfo.min), float(finfo.max)


def _layout_of(shape: tuple[int, ...], height: int, width: int) -> Layout | None:
    if shape in ((height, width), (height * width,)):
        return "gray"
    if shape == (height, width, 3):
        return "rgb_interleaved"
    if shape == (3, height, width):
        return "rgb_planar"
    return None


def _kind_of(
    in_dtype: np.dtype[np.generic], out_dtype: np.dtype[np.generic], layout: Layout
) -> ConversionKind:
    if layout != "gray":
        return "luminance"
    if in_dtype == out_dtype:
        return "copy"
    if out_dtype.kind == "f":
        return "cast"
    if in_dtype.kind == "f":
        return "round"
    in_lo, in_hi = _value_range(in_dtype)
    out_lo, out_hi = _value_range(out_dtype)
    return "cast" if out_lo <= in_lo and in_hi <= out_hi else "clip"


@dataclass(slots=True)
class Conversion:
    """How frames of one input layout become the output image; reused for every frame."""

    in_dtype: np.dtype[np.generic]
    in_shape: tuple[int, ...]
    out_dtype: np.dtype[np.generic]
    height: int
    width: int
    layout: Layout
    kind: ConversionKind
    _scratch: npt.NDArray[np.float64] | None = field(default=None, repr=False)
    _scratch2: npt.NDArray[np.float64] | None = field(default=None, repr=False)

    in_nbytes: int = field(init=False, default=0)
    """Bytes of one input frame."""
    out_nbytes: int = field(init=False, default=0)
    """Bytes of one output image."""

    def __post_init__(self) -> None:
        self.in_nbytes = math.prod(self.in_shape) * self.in_dtype.itemsize
        self.out_nbytes = self.height * self.width * self.out_dtype.itemsize

    @property
    def is_copy(self) -> bool:
        """True when a frame is the output image byte for byte (one memcpy)."""
        return self.kind == "copy"

    def convert_into(self, raw: Buffer, out: Buffer) -> int:
        """Convert one frame's bytes `raw` into the writable buffer `out`; return bytes written.

        Raises FrameRejected("size", ...) when `raw` does not hold exactly one input frame.
        """
        raw_view = memoryview(raw)
        if raw_view.nbytes != self.in_nbytes:
            raise FrameRejected(
                "size",
                f"value has {raw_view.nbytes} bytes, but {self.in_dtype} {list(self.in_shape)} "
                f"needs {self.in_nbytes}",
            )
        n_out = self.out_nbytes
        out_view = memoryview(out)
        if self.kind == "copy":  # one memcpy
            writable_byte_view(out_view)[:n_out] = byte_view(raw_view)
            return n_out
        dst = np.frombuffer(out_view, dtype=self.out_dtype, count=self.height * self.width).reshape(
            self.height, self.width
        )
        src = np.frombuffer(raw_view, dtype=self.in_dtype).reshape(self.in_shape)
        if self.layout == "gray":
            src = src.reshape(self.height, self.width)
        if self.kind == "cast":
            np.copyto(dst, src, casting="unsafe")
        elif self.kind == "clip":
            lo, hi = self._clip_bounds()
            np.clip(src, lo, hi, out=dst, casting="unsafe")
        elif self.kind == "round":
            scratch = self._float_scratch()
            np.copyto(scratch, src, casting="unsafe")
            self._round_clip_into(scratch, dst)
        else:
            self._luminance_into(src, dst)
        return n_out

    def _clip_bounds(self) -> tuple[np.generic, np.generic]:
        in_lo, in_hi = _value_range(self.in_dtype)
        out_lo, out_hi = _value_range(self.out_dtype)
        native = self.in_dtype.newbyteorder("=")
        return native.type(int(max(in_lo, out_lo))), native.type(int(min(in_hi, out_hi)))

    def _float_scratch(self) -> npt.NDArray[np.float64]:
        if self._scratch is None:
            self._scratch = np.empty((self.height, self.width), dtype=np.float64)
        return self._scratch

    def _round_clip_into(self, values: npt.NDArray[np.float64], dst: npt.NDArray[np.generic]) -> None:
        """Round, NaN -> 0, clip to the output range, cast into dst (values is scratch)."""
        if dst.dtype.kind == "f":
            np.copyto(dst, values, casting="unsafe")
            return
        out_lo, out_hi = _value_range(self.out_dtype)
        np.rint(values, out=values)
        np.nan_to_num(values, copy=False, nan=0.0, posinf=out_hi, neginf=out_lo)
        np.clip(values, out_lo, out_hi, out=values)
        np.copyto(dst, values, casting="unsafe")

    def _luminance_into(self, src: npt.NDArray[np.generic], dst: npt.NDArray[np.generic]) -> None:
        if self.layout == "rgb_interleaved":
            planes = (src[:, :, 0], src[:, :, 1], src[:, :, 2])
        else:
            planes = (src[0], src[1], src[2])
        luma = self._float_scratch()
        if self._scratch2 is None:
            self._scratch2 = np.empty((self.height, self.width), dtype=np.float64)
        term = self._scratch2
        np.multiply(planes[0], LUMINANCE_WEIGHTS[0], out=luma, casting="unsafe")
        for plane, weight in zip(planes[1:], LUMINANCE_WEIGHTS[1:], strict=True):
            np.multiply(plane, weight, out=term, casting="unsafe")
            luma += term
        self._round_clip_into(luma, dst)


def plan_conversion(
    in_dtype: np.dtype[np.generic] | str,
    in_shape: tuple[int, ...],
    out_dtype: np.dtype[np.generic] | str,
    height: int,
    width: int,
) -> Conversion:
    """Plan converting frames of `in_dtype` and numpy `in_shape` into (height, width) `out_dtype`.

    Raises FrameRejected with reason "dtype" or "shape" when no rule applies.
    """
    source = np.dtype(in_dtype)
    target = np.dtype(out_dtype)
    if source.kind not in "iuf" or source.itemsize not in (1, 2, 4, 8):
        raise FrameRejected("dtype", f"pixel type {source} is not an integer or float type")
    if target.kind not in "iuf":
        raise FrameRejected("dtype", f"output pixel type {target} is not an integer or float type")
    shape = tuple(int(n) for n in in_shape)
    layout = _layout_of(shape, height, width)
    if layout is None:
        raise FrameRejected(
            "shape",
            f"frame shape {list(shape)} (rows, columns[, colours]) does not match the config's "
            f"{height} x {width} image",
        )
    return Conversion(
        in_dtype=source,
        in_shape=shape,
        out_dtype=target,
        height=height,
        width=width,
        layout=layout,
        kind=_kind_of(source, target, layout),
    )
