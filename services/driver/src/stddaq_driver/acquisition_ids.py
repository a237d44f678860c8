"""Acquisition ids that never repeat across driver restarts (`--state-dir`).

The driver numbers acquisitions last + 1. With a state folder (Compose gives the driver a
volume) the last id is kept in `<state_dir>/<detector>.last-acquisition-id`, so a
restarted driver (crash, `docker kill`, `compose restart`) goes on from it. Without that
file (first start, the volume removed) the ids start at the current Unix time in seconds,
which is above any id an earlier stack could have used unless it started more than one
acquisition per second on average.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


class AcquisitionIdStore:
    """The last acquisition id of one detector, in a file."""

    def __init__(self, state_dir: str, detector_name: str) -> None:
        self.path = Path(state_dir) / f"{detector_name}.last-acquisition-id"
        self._stored: int | None = None

    def last(self) -> int:
        """The last id used (the next acquisition gets it + 1); when none was kept, the
        current Unix time in seconds minus 1."""
        try:
            text = self.path.read_text(encoding="utf-8").strip()
            self._stored = int(text)
            return self._stored
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as error:
            log.error("cannot read the last acquisition id from %s: %s", self.path, error)
        return int(time.time()) - 1

    def remember(self, acquisition_id: int) -> None:
        """Keep `acquisition_id` as the last one (atomically; a failure is logged)."""
        if acquisition_id == self._stored:
            return
        temp = self.path.with_name(self.path.name + ".tmp")
        try:
            temp.write_text(f"{acquisition_id}\n", encoding="utf-8")
            os.replace(temp, self.path)
            self._stored = acquisition_id
        except OSError as error:
            log.error("cannot keep the last acquisition id in %s: %s", self.path, error)
