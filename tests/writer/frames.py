"""Deterministic test images: the producer writes them, the checks recompute them."""

from __future__ import annotations

from typing import Any

import numpy as np

from stddaq_common.bus.metadata import Compression, ImageMeta, PcoInfo, dtype_of
from stddaq_common.wire.compression import bitshuffle_lz4_compress

TIMESTAMP_SEC = 1_700_000_000


def frame(image_id: int, height: int, width: int, dtype: Any = "<u2") -> np.ndarray[Any, Any]:
    """Image `image_id`: a ramp shifted by the id (different for every id, compressible)."""
    ramp = np.arange(height * width, dtype=np.uint64).reshape(height, width)
    values = (ramp * 7 + image_id * 131 + (ramp // width) * image_id) % np.iinfo(np.dtype(dtype)).max
    return values.astype(dtype)


def compressed_frame(image_id: int, height: int, width: int, dtype: Any = "<u2") -> bytes:
    """The bitshuffle_lz4 chunk of `frame(image_id, ...)`."""
    return bitshuffle_lz4_compress(frame(image_id, height, width, dtype))


def timestamp_ns(image_id: int) -> int:
    """The pco global timestamp the test driver sends for an image, in ns."""
    return (TIMESTAMP_SEC + image_id) * 1_000_000_000 + image_id


def meta_of(
    image_id: int, height: int, width: int, dtype: Any = "<u2", *, compressed_slot: bool = False
) -> ImageMeta:
    """The ImageMetadata published for a test image (pco detail with its timestamp)."""
    size = height * width * np.dtype(dtype).itemsize
    compression = Compression.NONE
    if compressed_slot:
        size = len(compressed_frame(image_id, height, width, dtype))
        compression = Compression.H5BITSHUFFLE_LZ4
    return ImageMeta(
        image_id=image_id,
        height=height,
        width=width,
        size=size,
        dtype=dtype_of(np.dtype(dtype)),
        compression=compression,
        detail=PcoInfo(TIMESTAMP_SEC + image_id, image_id, "CAM:FPICTURE"),
    )
