"""BSREAD channel descriptions: ChannelSpec, and parsing one from a data-header entry.

A data-header channel is `{name, type, shape, encoding, compression}` with the defaults
float64, [1], little, none (docs/interfaces.md, section 5). `shape` is in x,y order: an
image of H rows and W columns is [W, H]; `ChannelSpec.image_shape` gives numpy's (H, W).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from stddaq_common.wire.errors import HEADER, SIZE, WireFormatError

TYPE_CODES: Final[Mapping[str, str]] = {
    "bool": "?",
    "int8": "i1",
    "uint8": "u1",
    "int16": "i2",
    "uint16": "u2",
    "int32": "i4",
    "uint32": "u4",
    "int64": "i8",
    "uint64": "u8",
    "float16": "f2",
    "float32": "f4",
    "float64": "f8",
    "string": "u1",
}
"""BSREAD type name -> numpy type code. "string" values are raw UTF-8 bytes."""

BYTE_ORDERS: Final[Mapping[str, str]] = {"little": "<", "big": ">"}
"""BSREAD `encoding` -> numpy byte-order character."""

COMPRESSIONS: Final = ("none", "bitshuffle_lz4", "lz4")
"""Value compressions a channel may declare."""

MAX_DIMENSIONS: Final = 8
"""Most dimensions a channel shape may have."""

DEFAULT_MAX_VALUE_BYTES: Final = 256 * 1024 * 1024
"""Largest value (type x shape) a decoder accepts unless told otherwise."""


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One channel of a BSREAD data header; shape in BSREAD's x,y order ([W, H])."""

    name: str
    type: str = "float64"
    shape: tuple[int, ...] = (1,)
    encoding: str = "little"
    compression: str = "none"
    _dtype: np.dtype[np.generic] = field(init=False, repr=False, compare=False)
    _nbytes: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = _as_shape(self.name, self.shape)
        object.__setattr__(self, "shape", shape)
        if self.type not in TYPE_CODES:
            raise WireFormatError(f"channel {self.name!r} has unknown type {self.type!r}", HEADER)
        if self.encoding not in BYTE_ORDERS:
            raise WireFormatError(f"channel {self.name!r} has unknown encoding {self.encoding!r}", HEADER)
        if self.compression not in COMPRESSIONS:
            raise WireFormatError(
                f"channel {self.name!r} has unknown compression {self.compression!r}", HEADER
            )
        dtype = np.dtype(BYTE_ORDERS[self.encoding] + TYPE_CODES[self.type])
        object.__setattr__(self, "_dtype", dtype)
        nbytes = None if self.type == "string" else math.prod(shape) * dtype.itemsize
        object.__setattr__(self, "_nbytes", nbytes)

    @classmethod
    def for_image(
        cls,
        name: str,
        height: int,
        width: int,
        type: str = "uint16",
        *,
        encoding: str = "little",
        compression: str = "none",
    ) -> ChannelSpec:
        """The channel of a 2D image of `height` rows and `width` columns (shape [W, H])."""
        return cls(name, type, (width, height), encoding, compression)

    @property
    def numpy_dtype(self) -> np.dtype[np.generic]:
        """The values' numpy dtype, in the channel's byte order."""
        return self._dtype

    @property
    def image_shape(self) -> tuple[int, ...]:
        """numpy's shape (slowest first): (H, W) for BSREAD's [W, H]."""
        return self.shape[::-1]

    @property
    def nbytes(self) -> int | None:
        """Uncompressed bytes of one value: type x shape (None for "string": any length)."""
        return self._nbytes


def _as_shape(name: str, sizes: Sequence[int]) -> tuple[int, ...]:
    """The shape as a tuple of ints; WireFormatError unless 1 to 8 non-negative integers."""
    try:
        shape = tuple(operator.index(size) for size in sizes if not isinstance(size, bool))
    except TypeError:
        shape = ()
    if len(shape) != len(sizes) or not 1 <= len(shape) <= MAX_DIMENSIONS or min(shape) < 0:
        raise WireFormatError(
            f"channel {name!r} has invalid shape {list(sizes)!r:.80} "
            f"(1 to {MAX_DIMENSIONS} non-negative integers)",
            HEADER,
        )
    return shape


def bsread_type_of(dtype: npt.DTypeLike) -> str:
    """The BSREAD type name of a numpy dtype (ValueError if BSREAD has none)."""
    code = np.dtype(dtype).str[1:]
    if code == "b1":
        return "bool"
    for name, type_code in TYPE_CODES.items():
        if name != "string" and type_code == code:
            return name
    raise ValueError(f"BSREAD has no type for numpy dtype {np.dtype(dtype)}")


def _text_field(entry: Mapping[str, object], key: str, default: str, name: str) -> str:
    value = entry.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise WireFormatError(f"channel {name!r} field {key!r} is {value!r}, not a string", HEADER)
    return value.lower()


def _shape_field(entry: Mapping[str, object], name: str, default: Sequence[int] | None) -> tuple[int, ...]:
    value = entry.get("shape")
    if value is None:
        return tuple(default) if default is not None else (1,)
    if not isinstance(value, list) or not all(type(size) is int for size in value):
        raise WireFormatError(f"channel {name!r} shape is {value!r}, not a list of integers", HEADER)
    return tuple(value)


def parse_channel(
    entry: object,
    *,
    default_type: str | None = None,
    default_shape: Sequence[int] | None = None,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> ChannelSpec:
    """A ChannelSpec from one data-header entry; WireFormatError if it is not valid.

    `default_type`/`default_shape` stand in for fields the entry leaves out (psi-bsread's
    Sender omits them unless told); without them the BSREAD defaults float64 and [1] apply.
    """
    if not isinstance(entry, dict):
        raise WireFormatError(f"data-header channel {entry!r:.80} is not an object", HEADER)
    name = entry.get("name")
    if not isinstance(name, str):
        raise WireFormatError(f"data-header channel has no string name: {entry!r:.120}", HEADER)
    channel = ChannelSpec(
        name=name,
        type=_text_field(entry, "type", default_type or "float64", name),
        shape=_shape_field(entry, name, default_shape),
        encoding=_text_field(entry, "encoding", "little", name),
        compression=_text_field(entry, "compression", "none", name),
    )
    if channel.nbytes is not None and channel.nbytes > max_value_bytes:
        raise WireFormatError(
            f"channel {name!r} declares {channel.type} x {list(channel.shape)} = "
            f"{channel.nbytes} bytes, more than the allowed {max_value_bytes}",
            SIZE,
        )
    return channel
