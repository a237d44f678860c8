"""The ring the live stream reads: attached when it exists, re-attached when it is replaced.

The live stream may start before the service that creates the ring; it attaches on the
first image that needs it (retrying at most once a second, with a warning every 30 s).
Every few seconds it checks that the /dev/shm names still lead to its ring: a std_daq
reader unlinks the name when it exits (the mapping stays valid: keep reading, report it),
and a restarted owner may create a new ring (attach to the new one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from stddaq_common.ring.image_ring import ImageRing, RingError

log = logging.getLogger(__name__)

RETRY_INTERVAL_S = 1.0
WARN_INTERVAL_S = 30.0
NAME_CHECK_INTERVAL_S = 2.0

Attach = Callable[[], ImageRing]


class RingSource:
    """Holds the attached ring (or None yet) and keeps it current."""

    def __init__(self, description: str, attach: Attach) -> None:
        self.description = description
        self._attach = attach
        self._ring: ImageRing | None = None
        self._next_try = 0.0
        self._next_warning = 0.0
        self._next_name_check = 0.0
        self._name_missing = False
        self.attach_failures = 0

    @property
    def name_missing(self) -> bool:
        """True while the ring's /dev/shm name is gone (unlinked by someone else)."""
        return self._name_missing

    def get(self, now: float) -> ImageRing | None:
        """The ring, attaching it if that is due; None while it cannot be attached."""
        ring = self._ring
        if ring is not None:
            return ring
        if now < self._next_try:
            return None
        self._next_try = now + RETRY_INTERVAL_S
        try:
            ring = self._attach()
        except RingError as error:
            self.attach_failures += 1
            if now >= self._next_warning:
                self._next_warning = now + WARN_INTERVAL_S
                log.warning("cannot attach %s yet (retrying every %g s): %s",
                            self.description, RETRY_INTERVAL_S, error)
            return None
        log.info("attached %s (%d slots x %d bytes)", self.description,
                 ring.geometry.n_slots, ring.geometry.slot_bytes)
        self._ring = ring
        self._next_name_check = now + NAME_CHECK_INTERVAL_S
        return ring

    def check(self, now: float) -> None:
        """Every few seconds: if the ring's names vanished, report it or move to a new ring."""
        ring = self._ring
        if ring is None or now < self._next_name_check:
            return
        self._next_name_check = now + NAME_CHECK_INTERVAL_S
        if ring.name_exists():
            if self._name_missing:
                log.info("%s is back under its name", self.description)
                self._name_missing = False
            return
        try:
            replacement = self._attach()
        except RingError as error:
            if not self._name_missing:
                log.warning("the name of %s vanished (unlinked by another process?); still reading "
                            "the mapped ring: %s", self.description, error)
                self._name_missing = True
            return
        log.warning("%s was replaced by a new ring: attached the new one", self.description)
        self._ring = replacement
        self._name_missing = False
        ring.close()

    def close(self) -> None:
        """Unmap the ring (an attacher never unlinks anything)."""
        ring, self._ring = self._ring, None
        if ring is not None:
            ring.close()
