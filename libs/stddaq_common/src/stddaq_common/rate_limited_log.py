"""Warnings about bad inputs, at most one per key per interval, saying how many were held back.

A flood of bad messages (a misconfigured camera, a wrong viewer) must not flood the log
too: every bad input is still counted by its service's stats; the log shows the first of
each kind, then at most one per interval with the number not shown since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

DEFAULT_INTERVAL_S = 5.0


class RateLimitedLog:
    """`warning(key, message, *args)` logs to `logger` at most once per `interval_s` per key."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._next: dict[str, float] = {}
        self._held_back: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> bool:
        """Log `message % args` unless a `key` warning was logged less than an interval ago
        (then count it as held back); True if it was logged."""
        now = self._clock()
        if now < self._next.get(key, 0.0):
            self._held_back[key] = self._held_back.get(key, 0) + 1
            return False
        held = self._held_back.pop(key, 0)
        suffix = f" ({held} more like this since the last report)" if held else ""
        self._logger.warning(message + suffix, *args)
        self._next[key] = now + self._interval_s
        return True

    def held_back(self, key: str) -> int:
        """How many `key` warnings were held back since the last one logged."""
        return self._held_back.get(key, 0)
