"""BSREAD messages (docs/interfaces.md, section 5): multipart parts <-> BsreadMessage.

Parts: main header (JSON, htype bsr_m-1.1), data header (JSON, htype bsr_d-1.1, possibly
compressed as `dh_compression` says; its md5 as sent is the main header's `hash`), then per
channel a value part and a 16-byte timestamp part. An empty value part is a missing value.

The decoder keeps values raw (zero-copy views of the parts, possibly compressed);
`decode_value_into` decompresses one straight into a caller's buffer such as a ring slot.
Every malformed input raises WireFormatError. No sockets here: parts are any buffers.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from stddaq_common.wire.bsread_channels import (
    DEFAULT_MAX_VALUE_BYTES,
    TYPE_CODES,
    ChannelSpec,
    bsread_type_of,
    parse_channel,
)
from stddaq_common.wire.bsread_fast_header import (
    HeaderMatch,
    match_main_header,
    quick_patterns,
    same_layout,
)
from stddaq_common.wire.byte_views import BufferLike, byte_view, writable_byte_view
from stddaq_common.wire.compression import (
    bitshuffle_lz4_compress_view,
    bitshuffle_lz4_decompress,
    bitshuffle_lz4_decompress_into,
    bitshuffle_lz4_header,
    lz4_compress_view,
    lz4_decompress,
    lz4_decompress_into,
    lz4_uncompressed_size,
)
from stddaq_common.wire.errors import HASH, HEADER, JSON, MISSING, PARTS, SIZE, WireFormatError

__all__ = [
    "DATA_HTYPE",
    "MAIN_HTYPE",
    "BsreadDecoder",
    "BsreadEncoder",
    "BsreadHeaders",
    "BsreadMessage",
    "ChannelSpec",
    "bsread_type_of",
    "decode_value",
    "decode_value_into",
]

MAIN_HTYPE: Final = "bsr_m-1.1"
DATA_HTYPE: Final = "bsr_d-1.1"
HEADER_COMPRESSIONS: Final = ("none", "bitshuffle_lz4", "lz4")
MAX_MAIN_HEADER_BYTES: Final = 64 * 1024
"""A main header is ~150 bytes; anything this large is not one."""
MAX_DATA_HEADER_BYTES: Final = 16 * 1024 * 1024
"""Largest (decompressed) data header accepted."""
TIMESTAMP_BYTES: Final = 16
_UINT64_LIMIT: Final = 2**64
_INT64_LIMIT: Final = 2**63

_timestamp_formats = {"little": struct.Struct("<qq"), "big": struct.Struct(">qq")}


@dataclass(slots=True)
class BsreadMessage:
    """One decoded BSREAD message; values are raw part views (None: missing)."""

    pulse_id: int
    global_timestamp: tuple[int, int]
    hash: str
    channels: tuple[ChannelSpec, ...]
    values: list[memoryview | None]
    timestamps: list[tuple[int, int] | None]
    header_changed: bool = False
    """True when this message's data header differs from the previous message's."""


@dataclass(frozen=True, slots=True)
class BsreadHeaders:
    """A message's main and data header (`BsreadDecoder.decode_headers`)."""

    pulse_id: int
    global_timestamp: tuple[int, int]
    hash: str
    channels: tuple[ChannelSpec, ...]


@dataclass(slots=True)
class _CachedHeader:
    raw: bytes
    channels: tuple[ChannelSpec, ...]


_json_decoder = json.JSONDecoder()


def _json_object(view: memoryview, what: str) -> dict[str, object]:
    raw = view.tobytes()
    try:
        if raw[:1] == b"{" and raw[1:2] != b"\x00":  # UTF-8 (json.loads would detect it too)
            parsed = _json_decoder.decode(raw.decode())
        else:  # anything else as json.loads reads bytes (BOMs, UTF-16/32)
            parsed = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise WireFormatError(f"{what} is not valid JSON: {error}", JSON) from None
    if not isinstance(parsed, dict):
        raise WireFormatError(f"{what} is a JSON {type(parsed).__name__}, not an object", JSON)
    return parsed


def _integer(value: object, what: str, limit: int) -> int:
    if type(value) is not int or not 0 <= value < limit:
        raise WireFormatError(f"{what} is {value!r:.60}, not an integer in [0, {limit})", HEADER)
    return value


@dataclass(frozen=True, slots=True)
class _MainHeader:
    pulse_id: int
    global_timestamp: tuple[int, int]
    hash: str
    dh_compression: str


def _parse_main_header(view: memoryview) -> _MainHeader:
    if len(view) > MAX_MAIN_HEADER_BYTES:
        raise WireFormatError(f"main header has {len(view)} bytes, more than {MAX_MAIN_HEADER_BYTES}", SIZE)
    fast = match_main_header(view.tobytes())
    if fast is not None:
        return _MainHeader(fast[0], (fast[1], fast[2]), fast[3], fast[4])
    header = _json_object(view, "main header")
    if header.get("htype") != MAIN_HTYPE:
        raise WireFormatError(
            f"main header htype is {header.get('htype')!r:.60}, expected {MAIN_HTYPE!r}", HEADER
        )
    if "pulse_id" not in header:
        raise WireFormatError("main header has no pulse_id", HEADER)
    pulse_id = _integer(header["pulse_id"], "main header pulse_id", _UINT64_LIMIT)
    stamp = header.get("global_timestamp")
    if not isinstance(stamp, dict):
        raise WireFormatError(
            f"main header global_timestamp is {stamp!r:.60}, not an object {{sec, ns}}", HEADER
        )
    seconds = stamp.get("sec", stamp.get("epoch"))
    global_timestamp = (
        _integer(seconds, "global_timestamp.sec", _INT64_LIMIT),
        _integer(stamp.get("ns"), "global_timestamp.ns", _INT64_LIMIT),
    )
    digest = header.get("hash")
    if not isinstance(digest, str) or not digest:
        raise WireFormatError(f"main header hash is {digest!r:.60}, not a string", HEADER)
    compression = header.get("dh_compression")
    if compression is None:
        compression = "none"
    if compression not in HEADER_COMPRESSIONS:
        raise WireFormatError(
            f"main header dh_compression {compression!r:.60} is not one of {HEADER_COMPRESSIONS}",
            HEADER,
        )
    return _MainHeader(pulse_id, global_timestamp, digest.lower(), str(compression))


def _timestamp(view: memoryview, channel: ChannelSpec) -> tuple[int, int] | None:
    if len(view) == 0:
        return None
    if len(view) != TIMESTAMP_BYTES:
        raise WireFormatError(
            f"channel {channel.name!r} timestamp part has {len(view)} bytes, expected 16", SIZE
        )
    seconds, nanoseconds = _timestamp_formats[channel.encoding].unpack_from(view)
    return int(seconds), int(nanoseconds)


class BsreadDecoder:
    """Decodes BSREAD multipart messages; caches parsed data headers by hash.

    `default_type`/`default_shape` ([W, H]) apply to channels whose data header leaves
    type/shape out (psi-bsread's Sender without metadata); a std_daq receiver passes the
    config's type and [image_pixel_width, image_pixel_height]. A channel declaring more
    than `max_value_bytes` is rejected, so a lying header cannot make anyone allocate it.
    Not thread-safe: use one decoder per receiving thread.
    """

    def __init__(
        self,
        *,
        default_type: str | None = None,
        default_shape: Sequence[int] | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        cache_size: int = 16,
    ) -> None:
        if default_type is not None and default_type not in TYPE_CODES:
            raise ValueError(f"unknown BSREAD type {default_type!r}")
        self.default_type = default_type
        self.default_shape = tuple(default_shape) if default_shape is not None else None
        self.max_value_bytes = max_value_bytes
        self._cache: OrderedDict[tuple[str, str], _CachedHeader] = OrderedDict()
        self._cache_size = cache_size
        self._last_key: tuple[str, str] | None = None
        self.headers_parsed = 0
        """Data headers parsed so far (cache misses)."""
        self._quick: tuple[bytes, bytes | None, bytes, tuple[ChannelSpec, ...]] | None = None
        """For `head`: (hash text, dh_compression text, data header) of the last message
        `decode_headers` accepted whose main header has a known layout, and its channels."""
        self._exact: tuple[HeaderMatch, bytes, tuple[ChannelSpec, ...]] | None = None
        """For `head`: the fullmatch of main headers that are the last quick one text for text
        but the three numbers (same_layout), its data header and channels."""

    def decode(self, parts: Sequence[BufferLike]) -> BsreadMessage:
        """Decode one message from its parts; WireFormatError if it is malformed."""
        if len(parts) < 2:
            raise WireFormatError(
                f"BSREAD message has {len(parts)} part(s), needs at least the two headers", PARTS
            )
        main, channels = self._headers(parts[0], parts[1])
        expected = 2 + 2 * len(channels)
        if len(parts) != expected:
            raise WireFormatError(
                f"BSREAD message with {len(channels)} channel(s) needs {expected} parts, got {len(parts)}",
                PARTS,
            )
        values: list[memoryview | None] = []
        timestamps: list[tuple[int, int] | None] = []
        for index, channel in enumerate(channels):
            value = byte_view(parts[2 + 2 * index], f"channel {channel.name!r} value")
            values.append(value if len(value) else None)
            stamp = byte_view(parts[3 + 2 * index], f"channel {channel.name!r} timestamp")
            timestamps.append(_timestamp(stamp, channel))
        key = (main.hash, main.dh_compression)
        changed = key != self._last_key
        self._last_key = key
        return BsreadMessage(
            main.pulse_id, main.global_timestamp, main.hash, channels, values, timestamps, changed
        )

    def decode_headers(self, main_part: BufferLike, data_header_part: BufferLike) -> BsreadHeaders:
        """The two headers alone (before the value parts have arrived): pulse id, global
        timestamp, hash and channels; WireFormatError if either is malformed. Does not
        change what `decode` reports as `header_changed`."""
        main, channels = self._headers(main_part, data_header_part)
        return BsreadHeaders(main.pulse_id, main.global_timestamp, main.hash, channels)

    def head(
        self, main_part: BufferLike, data_header_part: BufferLike
    ) -> tuple[int, int, int, tuple[ChannelSpec, ...]]:
        """`decode_headers` as (pulse_id, sec, ns, channels): the per-message path.

        When the main header has a known layout (bsread_fast_header) with the very hash and
        dh_compression text of the last message accepted, and the data header is byte for
        byte that message's, the answer is the one `decode_headers` would give and is taken
        from it: one regular-expression match and one comparison; a header that is the
        last one text for text but its numbers (same_layout) needs a simpler match still.
        Anything else goes through `decode_headers` (WireFormatError if malformed).
        """
        if type(main_part) is bytes:
            exact = self._exact
            if exact is not None:
                match = exact[0](main_part)
                if match is not None and data_header_part == exact[1]:
                    pulse, sec, ns = match.groups()
                    return int(pulse), int(sec), int(ns), exact[2]  # at most 19 and 18 digits
            quick = self._quick
            if quick is not None:
                for pattern, groups in quick_patterns:
                    match = pattern(main_part)
                    if match is not None:
                        pulse, sec, ns, digest, compression = match.group(*groups)
                        if (digest == quick[0] and compression == quick[1] and data_header_part == quick[2]
                                and len(pulse) < 20 and len(sec) < 19 and len(ns) < 19):
                            self._exact = (same_layout(main_part, match, groups), quick[2], quick[3])
                            return int(pulse), int(sec), int(ns), quick[3]  # below 2**63: no limit passed
                        break
        headers = self.decode_headers(main_part, data_header_part)
        if type(main_part) is bytes and type(data_header_part) is bytes:
            for pattern, groups in quick_patterns:
                match = pattern(main_part)
                if match is not None:
                    _, _, _, digest, compression = match.group(*groups)
                    self._quick = (digest, compression, data_header_part, headers.channels)
                    self._exact = (same_layout(main_part, match, groups), data_header_part, headers.channels)
                    break
        seconds, nanoseconds = headers.global_timestamp
        return headers.pulse_id, seconds, nanoseconds, headers.channels

    def _headers(
        self, main_part: BufferLike, data_header_part: BufferLike
    ) -> tuple[_MainHeader, tuple[ChannelSpec, ...]]:
        main = _parse_main_header(byte_view(main_part, "main header"))
        return main, self._channels(main, byte_view(data_header_part, "data header"))

    def _channels(self, main: _MainHeader, view: memoryview) -> tuple[ChannelSpec, ...]:
        key = (main.hash, main.dh_compression)
        cached = self._cache.get(key)
        if cached is not None and cached.raw == view:
            return cached.channels
        if hashlib.md5(view).hexdigest() != main.hash:
            raise WireFormatError(
                f"data header md5 {hashlib.md5(view).hexdigest()} does not match the main "
                f"header hash {main.hash!r:.60}",
                HASH,
            )
        channels = self._parse_data_header(self._data_header_json(main, view))
        self.headers_parsed += 1
        self._cache[key] = _CachedHeader(view.tobytes(), channels)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return channels

    @staticmethod
    def _data_header_json(main: _MainHeader, view: memoryview) -> memoryview:
        if main.dh_compression == "bitshuffle_lz4":
            return bitshuffle_lz4_decompress(view, np.uint8, max_nbytes=MAX_DATA_HEADER_BYTES).data
        if main.dh_compression == "lz4":
            return memoryview(lz4_decompress(view, max_nbytes=MAX_DATA_HEADER_BYTES))
        if len(view) > MAX_DATA_HEADER_BYTES:
            raise WireFormatError(
                f"data header has {len(view)} bytes, more than {MAX_DATA_HEADER_BYTES}", SIZE
            )
        return view

    def _parse_data_header(self, view: memoryview) -> tuple[ChannelSpec, ...]:
        header = _json_object(view, "data header")
        if header.get("htype") != DATA_HTYPE:
            raise WireFormatError(
                f"data header htype is {header.get('htype')!r:.60}, expected {DATA_HTYPE!r}",
                HEADER,
            )
        entries = header.get("channels")
        if not isinstance(entries, list):
            raise WireFormatError(f"data header channels is {entries!r:.60}, not a list", HEADER)
        return tuple(
            parse_channel(
                entry,
                default_type=self.default_type,
                default_shape=self.default_shape,
                max_value_bytes=self.max_value_bytes,
            )
            for entry in entries
        )


# --- channel values ---------------------------------------------------------------------


def _value_view(channel: ChannelSpec, raw: BufferLike | None) -> memoryview:
    if raw is None:
        raise WireFormatError(f"channel {channel.name!r} value is missing (sent empty)", MISSING)
    view = byte_view(raw, f"channel {channel.name!r} value")
    if len(view) == 0:
        raise WireFormatError(f"channel {channel.name!r} value is missing (sent empty)", MISSING)
    return view


def _size_error(channel: ChannelSpec, nbytes: int) -> WireFormatError:
    return WireFormatError(
        f"channel {channel.name!r} value has {nbytes} bytes, but {channel.type} x "
        f"{list(channel.shape)} needs {channel.nbytes}",
        SIZE,
    )


def _with_channel(channel: ChannelSpec, error: WireFormatError) -> WireFormatError:
    return WireFormatError(f"channel {channel.name!r}: {error.reason}", error.kind)


def _uncompressed_nbytes(channel: ChannelSpec, view: memoryview, max_nbytes: int) -> int:
    """The value's decoded size as its (compression) header says, checked against the channel."""
    try:
        if channel.compression == "bitshuffle_lz4":
            nbytes = bitshuffle_lz4_header(view)[0]
        elif channel.compression == "lz4":
            nbytes = lz4_uncompressed_size(view)
        else:
            nbytes = len(view)
    except WireFormatError as error:
        raise _with_channel(channel, error) from None
    if channel.nbytes is not None and nbytes != channel.nbytes:
        raise _size_error(channel, nbytes)
    if nbytes > max_nbytes or nbytes % channel.numpy_dtype.itemsize:
        raise WireFormatError(
            f"channel {channel.name!r} value of {nbytes} bytes is not allowed "
            f"(limit {max_nbytes}, element size {channel.numpy_dtype.itemsize})",
            SIZE,
        )
    return nbytes


def _raw_into(channel: ChannelSpec, view: memoryview, destination: memoryview) -> int:
    """Decompress (or copy) the value's bytes, in the channel's byte order, into destination."""
    try:
        if channel.compression == "bitshuffle_lz4":
            return bitshuffle_lz4_decompress_into(
                view, destination, channel.numpy_dtype, expected_nbytes=channel.nbytes
            )
        if channel.compression == "lz4":
            return lz4_decompress_into(view, destination, expected_nbytes=channel.nbytes)
    except WireFormatError as error:
        raise _with_channel(channel, error) from None
    nbytes = len(view)
    if channel.nbytes is not None and nbytes != channel.nbytes:
        raise _size_error(channel, nbytes)
    if nbytes > len(destination):
        raise WireFormatError(
            f"channel {channel.name!r} value has {nbytes} bytes, more than the "
            f"{len(destination)}-byte output buffer",
            SIZE,
        )
    destination[:nbytes] = view
    return nbytes


def decode_value_into(channel: ChannelSpec, raw: BufferLike | None, out: BufferLike) -> int:
    """Decode one value into the start of `out` (e.g. a ring slot); return bytes written.

    The bytes land in little-endian order whatever the channel's encoding (big-endian
    values are swapped in place), decompressed in one pass without an intermediate buffer.
    WireFormatError if the value is missing, malformed, of the wrong size or too large for `out`.
    """
    view = _value_view(channel, raw)
    destination = writable_byte_view(out)
    dtype = channel.numpy_dtype
    if channel.encoding == "big" and dtype.itemsize > 1 and channel.compression == "none":
        nbytes = len(view)
        if channel.nbytes is not None and nbytes != channel.nbytes:
            raise _size_error(channel, nbytes)
        if nbytes % dtype.itemsize or nbytes > len(destination):
            raise WireFormatError(
                f"channel {channel.name!r} value of {nbytes} bytes does not fit the "
                f"{len(destination)}-byte output as {channel.type}",
                SIZE,
            )
        target = np.frombuffer(destination, dtype.newbyteorder("<"), nbytes // dtype.itemsize)
        target[...] = np.frombuffer(view, dtype)
        return nbytes
    nbytes = _raw_into(channel, view, destination)
    if channel.encoding == "big" and dtype.itemsize > 1:
        if nbytes % dtype.itemsize:
            raise WireFormatError(
                f"channel {channel.name!r} value of {nbytes} bytes is not whole {channel.type}s",
                SIZE,
            )
        np.frombuffer(destination, dtype, nbytes // dtype.itemsize).byteswap(inplace=True)
    return nbytes


def decode_value(
    channel: ChannelSpec,
    raw: BufferLike | None,
    *,
    max_nbytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> npt.NDArray[np.generic]:
    """One value as a numpy array of the channel's dtype and image_shape.

    Uncompressed values are zero-copy read-only views of the part; compressed ones are
    decompressed into a new array. Big-endian channels give big-endian arrays (the right
    numbers). "string" channels give their raw UTF-8 bytes as a 1-D uint8 array.
    """
    view = _value_view(channel, raw)
    nbytes = _uncompressed_nbytes(channel, view, max_nbytes)
    dtype = channel.numpy_dtype
    if channel.compression == "none":
        array = np.frombuffer(view, dtype)
    else:
        array = np.empty(nbytes // dtype.itemsize, dtype)
        _raw_into(channel, view, writable_byte_view(array))
    if channel.nbytes is None:
        return array
    return array.reshape(channel.image_shape)


# --- encoding ---------------------------------------------------------------------------


@dataclass(slots=True)
class _ChannelPlan:
    spec: ChannelSpec
    timestamp: struct.Struct
    n_elements: int | None


def _data_header_entry(channel: ChannelSpec, with_type_and_shape: bool) -> dict[str, object]:
    entry: dict[str, object] = {"name": channel.name}
    if with_type_and_shape:
        entry["type"] = channel.type
        entry["shape"] = list(channel.shape)
    entry["encoding"] = channel.encoding
    entry["compression"] = channel.compression
    return entry


class BsreadEncoder:
    """Produces the parts of BSREAD messages exactly as a camera sends them.

    The data header is encoded (and compressed, and hashed) once. Uncompressed numpy
    values are sent zero-copy (a view of the array; keep it unchanged until sent).
    `with_type_and_shape=False` leaves type and shape out of the data header, as
    psi-bsread's Sender does for channels added without metadata.
    """

    def __init__(
        self,
        channels: Sequence[ChannelSpec],
        *,
        dh_compression: str | None = None,
        with_type_and_shape: bool = True,
    ) -> None:
        if dh_compression not in (None, *HEADER_COMPRESSIONS):
            raise ValueError(f"unknown data-header compression {dh_compression!r}")
        self.channels = tuple(channels)
        entries = [_data_header_entry(c, with_type_and_shape) for c in self.channels]
        text = json.dumps({"htype": DATA_HTYPE, "channels": entries}).encode()
        if dh_compression == "bitshuffle_lz4":
            self.data_header = bytes(bitshuffle_lz4_compress_view(np.frombuffer(text, np.uint8)))
        elif dh_compression == "lz4":
            self.data_header = bytes(lz4_compress_view(text))
        else:
            self.data_header = text
        self.hash = hashlib.md5(self.data_header).hexdigest()
        suffix = "" if dh_compression in (None, "none") else f',"dh_compression":"{dh_compression}"'
        self._main_template = (
            f'{{"htype":"{MAIN_HTYPE}","pulse_id":%d,"global_timestamp":{{"sec":%d,"ns":%d}}'
            f',"hash":"{self.hash}"{suffix}}}'
        ).encode()
        self._plans = [
            _ChannelPlan(c, _timestamp_formats[c.encoding], _element_count(c)) for c in self.channels
        ]

    def main_header(self, pulse_id: int, global_timestamp: tuple[int, int]) -> bytes:
        """The main header of one message (a template: only the id and timestamp change).

        The caller checks that pulse_id is a uint64 (`encode` does)."""
        seconds, nanoseconds = global_timestamp
        return self._main_template % (int(pulse_id), int(seconds), int(nanoseconds))

    def encode(
        self,
        pulse_id: int,
        global_timestamp: tuple[int, int],
        values: Sequence[object | None],
        timestamps: Sequence[tuple[int, int] | None] | None = None,
    ) -> list[bytes | memoryview]:
        """The parts of one message; a None value is sent as BSREAD's missing value."""
        if len(values) != len(self._plans):
            raise ValueError(f"{len(values)} values for {len(self._plans)} channels")
        if not 0 <= pulse_id < _UINT64_LIMIT:
            raise ValueError(f"pulse_id {pulse_id} is not a uint64")
        parts: list[bytes | memoryview] = [self.main_header(pulse_id, global_timestamp), self.data_header]
        for index, (plan, value) in enumerate(zip(self._plans, values, strict=True)):
            if value is None:
                parts += (b"", b"")
                continue
            stamp = timestamps[index] if timestamps is not None else None
            stamp_seconds, stamp_ns = stamp if stamp is not None else global_timestamp
            parts.append(_encode_value(plan, value))
            parts.append(plan.timestamp.pack(stamp_seconds, stamp_ns))
        return parts


def _element_count(channel: ChannelSpec) -> int | None:
    if channel.nbytes is None:
        return None
    return channel.nbytes // channel.numpy_dtype.itemsize


def _as_array(plan: _ChannelPlan, value: object) -> npt.NDArray[np.generic]:
    """The value as a C-contiguous array in the channel's dtype and byte order."""
    dtype = plan.spec.numpy_dtype
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        view = byte_view(value, "value")
        if len(view) % dtype.itemsize:
            raise ValueError(f"channel {plan.spec.name!r}: {len(view)} bytes are not whole {plan.spec.type}s")
        array = np.frombuffer(view, dtype)
    elif isinstance(value, np.ndarray):
        if value.dtype.str[1:] != dtype.str[1:]:
            raise ValueError(f"channel {plan.spec.name!r} is {plan.spec.type}, value is {value.dtype}")
        array = value if value.dtype == dtype else value.astype(dtype)
    else:
        array = np.asarray(value, dtype=dtype)
    if plan.n_elements is not None and array.size != plan.n_elements:
        raise ValueError(
            f"channel {plan.spec.name!r} needs {plan.n_elements} elements "
            f"({list(plan.spec.shape)}), value has {array.size}"
        )
    return np.ascontiguousarray(array)


def _encode_value(plan: _ChannelPlan, value: object) -> memoryview:
    array = _as_array(plan, value)
    compression = plan.spec.compression
    if compression == "bitshuffle_lz4":
        return bitshuffle_lz4_compress_view(array)
    if compression == "lz4":
        return lz4_compress_view(byte_view(array))
    return byte_view(array)
