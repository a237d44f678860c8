"""Small DAQ config documents for tests and benchmarks: one PCO module of 16-bit pixels."""

from __future__ import annotations

import json
from pathlib import Path
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


def write_pco_config(
    path: Path, detector_name: str, height: int = 64, width: int = 64, **extra: Any
) -> Path:
    """Write pco_config(...) as JSON to `path`; returns `path`."""
    path.write_text(json.dumps(pco_config(detector_name, height, width, **extra), indent=2))
    return path
