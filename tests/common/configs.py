"""Small DAQ config documents for tests: one PCO module of 16-bit pixels."""

from __future__ import annotations

import pwd
from typing import Any


def pco_config(detector_name: str, height: int = 64, width: int = 64, **extra: Any) -> dict[str, Any]:
    """A valid std_daq config document for a PCO camera of `height` x `width` uint16 pixels;
    `extra` keys are added (or replace the defaults)."""
    return {
        "detector_name": detector_name,
        "detector_type": "pco",
        "n_modules": 1,
        "bit_depth": 16,
        "image_pixel_height": height,
        "image_pixel_width": width,
        "start_udp_port": 0,
        "module_positions": {},
        **extra,
    }


def unused_uid(start: int = 4321) -> int:
    """The first uid from `start` on that no user has (for files written as another user)."""
    uid = start
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1
