"""What an ImageMetadata says about the bytes in its slot, checked before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stddaq_common.bus.metadata import Compression, Dtype, ImageMeta, numpy_dtype


class BadImage(ValueError):
    """Metadata that does not describe a streamable image; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class ImageLayout:
    """Height, width and pixel type of an image, its raw size, and how its slot holds it."""

    height: int
    width: int
    dtype: np.dtype[np.generic]
    raw_nbytes: int
    compressed: bool


def layout_of(meta: ImageMeta, slot_nbytes: int) -> ImageLayout:
    """The layout of `meta`'s image, whose slot holds `slot_nbytes`; BadImage if they disagree."""
    if meta.dtype is Dtype.UNKNOWN:
        raise BadImage("metadata dtype is unknown (0)")
    if meta.height < 1 or meta.width < 1:
        raise BadImage(f"metadata shape {meta.height} x {meta.width} is empty")
    dtype = numpy_dtype(meta.dtype)
    raw_nbytes = meta.height * meta.width * dtype.itemsize
    if meta.compression is Compression.NONE:
        if slot_nbytes != raw_nbytes:
            raise BadImage(
                f"slot holds {slot_nbytes} bytes, but {meta.height} x "
                f"{meta.width} {dtype.name} needs {raw_nbytes}"
            )
        return ImageLayout(meta.height, meta.width, dtype, raw_nbytes, compressed=False)
    if meta.compression is Compression.H5BITSHUFFLE_LZ4:
        return ImageLayout(meta.height, meta.width, dtype, raw_nbytes, compressed=True)
    raise BadImage(
        f"compression {meta.compression.name.lower()} cannot be streamed "
        "(only none and h5bitshuffle_lz4)"
    )
