"""Ring-buffer geometry std_daq computes from the config (docs/interfaces.md, section 4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from stddaq_common.config.model import DaqConfig

MIN_SLOTS = 1000
"""std_daq never makes a ring of fewer slots."""

SIZE_ALIGNMENT = 2 * 1024 * 1024
"""The total buffer size is rounded up to a multiple of 2 MiB."""


@dataclass(frozen=True, slots=True)
class RingGeometry:
    """Slot size, slot count and total size of one shared-memory ring."""

    slot_bytes: int
    n_slots: int

    @property
    def total_bytes(self) -> int:
        """slot_bytes x n_slots rounded up to a multiple of 2 MiB."""
        raw = self.slot_bytes * self.n_slots
        return -(-raw // SIZE_ALIGNMENT) * SIZE_ALIGNMENT

    def slot_of(self, image_id: int) -> int:
        """The slot an image lives in: image_id % n_slots."""
        return image_id % self.n_slots

    def offset_of(self, image_id: int) -> int:
        """Byte offset of an image's slot in the buffer."""
        return (image_id % self.n_slots) * self.slot_bytes


def image_dtype(config: DaqConfig) -> np.dtype[np.generic]:
    """Pixel type of the final grayscale image in the `image` ring."""
    if config.detector_type == "jungfrau-converted":
        return np.dtype("<f4")
    if config.detector_type == "gigafrost":
        return np.dtype("<u2")
    return np.dtype(f"<u{config.bit_depth // 8}")


def slot_bytes_for(config: DaqConfig) -> int:
    """Bytes of one image slot: H x W x bit_depth/8 (jungfrau-converted x 4, gigafrost x 2)."""
    pixels = config.image_pixel_height * config.image_pixel_width
    return pixels * image_dtype(config).itemsize


def ram_buffer_gib(config: DaqConfig) -> int:
    """`ram_buffer_gb` as std_daq reads it: an unsigned integer (0.5 -> 0, 2.9 -> 2)."""
    return int(config.ram_buffer_gb)


def n_slots_for(config: DaqConfig, slot_bytes: int) -> int:
    """Slot count: max(1000, floor(G x 2^30 / slot_bytes)), G = ram_buffer_gb's integer part."""
    return max(MIN_SLOTS, ram_buffer_gib(config) * 2**30 // slot_bytes)


def ram_buffer_warning(config: DaqConfig) -> str | None:
    """A warning naming the field and the slot count if `ram_buffer_gb` has a fractional
    part (std_daq, and therefore stddaq, use only its integer part); None otherwise."""
    value = config.ram_buffer_gb
    if value == int(value):
        return None
    geometry = ring_geometry(config)
    return (
        f"ram_buffer_gb: {value:g} has a fractional part; std_daq reads it as the unsigned "
        f"integer {ram_buffer_gib(config)}, so the ring has {geometry.n_slots} slots x "
        f"{geometry.slot_bytes} bytes = {geometry.total_bytes} bytes (write a whole number)"
    )


def ring_geometry(config: DaqConfig) -> RingGeometry:
    """The geometry of the `<detector>-image` ring for this config."""
    slot = slot_bytes_for(config)
    return RingGeometry(slot_bytes=slot, n_slots=n_slots_for(config, slot))
