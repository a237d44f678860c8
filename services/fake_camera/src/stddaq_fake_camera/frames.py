"""Deterministic camera frames: the image of a pulse id, without keeping a copy.

Frame `pulse_id` is a window into one fixed buffer of Poisson(100) noise (seeded), starting
`pulse_id % period` pixels in. So every stage downstream can recompute the exact frame of
any id (`FramePattern(shape, dtype, period).frame(pulse_id)`) and check it pixel by pixel,
neighbouring ids differ everywhere (shifted noise), compression ratios are those of a
real noisy image, and the camera sends zero-copy views of memory that never changes.
Frames repeat after `period` ids; the default period is a prime far above any ring's slot
count, so a slot holding a stale image never matches by chance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

DEFAULT_PERIOD = 65521
"""Largest prime below 2**16: frames repeat only after this many ids."""

NOISE_MEAN = 100.0
"""Mean count of the Poisson noise (compresses about 2.5x with bitshuffle-LZ4 at uint16)."""

NOISE_SEED = 20240501


@dataclass(slots=True)
class FramePattern:
    """The frames of one camera setting: shape (rows, columns), pixel type and period."""

    shape: tuple[int, int]
    dtype: np.dtype[np.generic]
    period: int = DEFAULT_PERIOD
    _noise: npt.NDArray[np.generic] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        height, width = self.shape
        if height < 1 or width < 1:
            raise ValueError(f"frame shape must be positive, got {list(self.shape)}")
        if self.period < 1:
            raise ValueError(f"frame period must be >= 1, got {self.period}")
        self.dtype = np.dtype(self.dtype)
        if self.dtype.kind not in "iuf":
            raise ValueError(f"frame pixel type must be an integer or float type, got {self.dtype}")
        rng = np.random.default_rng(NOISE_SEED)
        counts = rng.poisson(NOISE_MEAN, size=height * width + self.period - 1)
        if self.dtype.kind in "iu":
            counts = np.minimum(counts, np.iinfo(self.dtype).max)  # type: ignore[type-var]
        self._noise = counts.astype(self.dtype)
        self._noise.flags.writeable = False

    @property
    def nbytes(self) -> int:
        """Bytes of one frame."""
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    @property
    def buffer(self) -> npt.NDArray[np.generic]:
        """The one read-only buffer every frame is a window of."""
        return self._noise

    def frame_offset(self, pulse_id: int) -> int:
        """Where frame `pulse_id` starts in `buffer`, in bytes."""
        return (pulse_id % self.period) * self.dtype.itemsize

    def frame(self, pulse_id: int) -> npt.NDArray[np.generic]:
        """The (read-only, zero-copy) image of `pulse_id`."""
        start = pulse_id % self.period
        height, width = self.shape
        return self._noise[start : start + height * width].reshape(height, width)


def expected_frame(
    pulse_id: int, shape: tuple[int, int], dtype: np.dtype[np.generic] | str, period: int = DEFAULT_PERIOD
) -> npt.NDArray[np.generic]:
    """The frame the fake camera sends for `pulse_id` (builds the pattern each call: for checks)."""
    return FramePattern(shape, np.dtype(dtype), period).frame(pulse_id)
