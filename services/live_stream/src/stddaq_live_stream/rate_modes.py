"""Which images a live stream sends: the rate modes of `live_stream_configs` (pure logic).

- `forward`: every image.
- `batch [Y, N]`: the images whose `image_id % N < Y` (Y of every N consecutive ids).
- `periodic [Y, N]`: N times a second, the next Y images that arrive. Time is cut into
  windows of 1/N s on the monotonic clock; in each window the first Y images that arrive
  are selected and the rest are skipped. An unused window does not carry over.

Nothing here touches sockets or clocks: the caller passes the time, so the logic is tested
with a fake clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from stddaq_common.config.model import LiveStreamConfig


class RateMode(Protocol):
    """Decides, image by image, whether the live stream sends it."""

    def selects(self, image_id: int, now: float) -> bool:
        """True if image `image_id`, arriving at monotonic time `now` (s), is to be sent."""
        ...

    def describe(self) -> str:
        """One human-readable phrase, e.g. `batch [1, 10]: ids with id % 10 < 1`."""
        ...


@dataclass(frozen=True, slots=True)
class ForwardMode:
    """Every image."""

    def selects(self, image_id: int, now: float) -> bool:
        """Always True."""
        return True

    def describe(self) -> str:
        """`forward: every image`."""
        return "forward: every image"


@dataclass(frozen=True, slots=True)
class BatchMode:
    """Images whose id modulo `period` is below `per_period` (config [Y, N] = [per_period, period])."""

    per_period: int
    period: int

    def __post_init__(self) -> None:
        if self.period < 1 or not 1 <= self.per_period <= self.period:
            raise ValueError(f"batch [Y, N] needs 1 <= Y <= N, got [{self.per_period}, {self.period}]")

    def selects(self, image_id: int, now: float) -> bool:
        """True if `image_id % N < Y`."""
        return image_id % self.period < self.per_period

    def describe(self) -> str:
        """`batch [Y, N]: ids with id % N < Y`."""
        return f"batch [{self.per_period}, {self.period}]: ids with id % {self.period} < {self.per_period}"


@dataclass(slots=True)
class PeriodicMode:
    """The first `per_window` images of every 1/`windows_per_second` s window.

    Config [Y, N] = [per_window, windows_per_second].
    """

    per_window: int
    windows_per_second: int
    _window: int = field(default=-1, init=False, repr=False)
    _taken: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.per_window < 1 or self.windows_per_second < 1:
            raise ValueError(
                f"periodic [Y, N] needs Y >= 1 and N >= 1, got [{self.per_window}, {self.windows_per_second}]"
            )

    def window_of(self, now: float) -> int:
        """Index of the 1/N s window that monotonic time `now` falls in."""
        return math.floor(now * self.windows_per_second)

    def selects(self, image_id: int, now: float) -> bool:
        """True for the first Y images that arrive in the window of `now`."""
        window = self.window_of(now)
        if window != self._window:
            self._window = window
            self._taken = 0
        if self._taken < self.per_window:
            self._taken += 1
            return True
        return False

    def describe(self) -> str:
        """`periodic [Y, N]: the first Y images of every 1/N s`."""
        return (
            f"periodic [{self.per_window}, {self.windows_per_second}]: the first {self.per_window} "
            f"image(s) of every {1000.0 / self.windows_per_second:g} ms"
        )


def rate_mode_for(stream_config: LiveStreamConfig) -> RateMode:
    """The rate mode a `live_stream_configs` entry describes (a new one: periodic keeps state)."""
    if stream_config.type == "forward":
        return ForwardMode()
    if len(stream_config.config) != 2:
        raise ValueError(f"{stream_config.type} needs config [Y, N], got {stream_config.config}")
    y, n = stream_config.config
    if stream_config.type == "batch":
        return BatchMode(per_period=y, period=n)
    return PeriodicMode(per_window=y, windows_per_second=n)
