"""Warnings about bad inputs, at most one per interval per kind, saying how many were held back."""

from __future__ import annotations

import logging
import time


class ThrottledWarning:
    """Logs `logger.warning` for one kind of problem at most once per `interval_s`."""

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._next: dict[str, float] = {}
        self._held_back: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        """Log `message` unless a `kind` warning was logged less than an interval ago."""
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            self._held_back[kind] = self._held_back.get(kind, 0) + 1
            return
        held = self._held_back.pop(kind, 0)
        more = f" ({held} more {kind} since the last report)" if held else ""
        self._logger.warning("%s%s", message, more)
        self._next[kind] = now + self._interval_s
