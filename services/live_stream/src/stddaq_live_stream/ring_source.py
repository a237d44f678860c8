"""The ring the live stream reads: attached when it exists, re-attached when it is replaced.

The live stream may start before the service that creates the ring; it attaches on the
first image that needs it (retrying at most once a second, with a warning every 30 s).
Every few seconds it checks that the /dev/shm names still lead to its ring: a std_daq
reader unlinks the name when it exits (the mapping stays valid: keep reading, report it),
and a restarted owner may create a new ring (attach to the new one).

A ring that a std_daq service made (no stddaq companion) is attached too, as std_daq's
readers attach it; it is reported as unverified (it cannot prove an image was not
overwritten while read) until a stddaq companion appears, then the verified ring replaces
it. A ring whose segment another program resized is dropped at once (the ring refuses
every read from then on) and attached again only when a ring of the right size is there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from stddaq_common.ring.image_ring import ImageRing, RingError

log = logging.getLogger(__name__)

RETRY_INTERVAL_S = 1.0
WARN_INTERVAL_S = 30.0
NAME_CHECK_INTERVAL_S = 2.0
SIZE_CHECK_INTERVAL_S = 0.5

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
        self._next_size_check = 0.0
        self._name_missing = False
        self.attach_failures = 0
        self.resized = 0
        """Rings dropped because another program resized their segment."""

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

    @property
    def current(self) -> ImageRing | None:
        """The attached ring, if any (never attaches)."""
        return self._ring

    @property
    def unverified(self) -> bool:
        """True while the attached ring has no stddaq companion (made by std_daq)."""
        return self._ring is not None and not self._ring.verified

    def check(self, now: float) -> None:
        """Twice a second: drop a resized ring. Every few seconds: if the ring's names
        vanished, report it or move to a new ring; a ring without companion moves to a
        verified one once a companion appears."""
        ring = self._ring
        if ring is None:
            return
        if now >= self._next_size_check:
            self._next_size_check = now + SIZE_CHECK_INTERVAL_S
            if not ring.check_size():  # the ring logged the error
                self.resized += 1
                self._ring = None
                self._next_try = now + RETRY_INTERVAL_S
                ring.close()
                return
        if now < self._next_name_check:
            return
        self._next_name_check = now + NAME_CHECK_INTERVAL_S
        if not ring.verified:
            self._try_verified(ring)
            return
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

    def _try_verified(self, ring: ImageRing) -> None:
        """Replace a ring without companion by the stddaq ring of the same name, if there is one."""
        if not os.path.exists(ring.companion_path):
            return
        try:
            replacement = self._attach()
        except RingError:
            return
        if not replacement.verified:
            replacement.close()
            return
        log.info("%s now has a stddaq companion: images are verified again", self.description)
        self._ring = replacement
        ring.close()

    def close(self) -> None:
        """Unmap the ring (an attacher never unlinks anything)."""
        ring, self._ring = self._ring, None
        if ring is not None:
            ring.close()
