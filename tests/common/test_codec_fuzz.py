"""Fuzzing the decoders: random and mutated parts only ever raise WireFormatError.

The mutations aim at what a lying sender controls: JSON fields (with the hash recomputed
so the data-header parser is reached), length fields inside compressed values, truncation
and padding. A crash (a read past a buffer in C code) would take the test process down.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stddaq_common.wire.array10 import decode_array10
from stddaq_common.wire.bsread import (
    BsreadDecoder,
    BsreadEncoder,
    ChannelSpec,
    decode_value,
    decode_value_into,
)
from stddaq_common.wire.compression import bitshuffle_lz4_decompress_into, lz4_decompress_into
from stddaq_common.wire.errors import KINDS, WireFormatError

H, W = 8, 24
MAX_BYTES = 1 << 20
EXAMPLES = int(os.environ.get("STDDAQ_FUZZ_EXAMPLES", "150"))
"""Examples per fuzz test; raise it for a long local run (the suite keeps it small)."""
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

IMAGE = np.random.default_rng(0).poisson(100, (H, W)).astype("<u2")


def base_messages() -> list[list[bytes]]:
    messages = []
    for dh_compression in (None, "bitshuffle_lz4", "lz4"):
        for compression in ("none", "bitshuffle_lz4", "lz4"):
            channels = [
                ChannelSpec.for_image("img", H, W, "uint16", compression=compression),
                ChannelSpec("temp", encoding="big"),
                ChannelSpec("name", "string", compression=compression),
            ]
            parts = BsreadEncoder(channels, dh_compression=dh_compression).encode(
                5, (6, 7), [IMAGE, 1.5, "camera"]
            )
            messages.append([bytes(part) for part in parts])
    return messages


BASES = base_messages()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def exercise_bsread(parts: list[Any]) -> None:
    """Decode and then decode every value every way; only WireFormatError may come out."""
    decoder = BsreadDecoder(max_value_bytes=MAX_BYTES)
    try:
        message = decoder.decode(parts)
    except WireFormatError as error:
        assert error.kind in KINDS and error.reason
        return
    slot = bytearray(MAX_BYTES)
    for channel, value in zip(message.channels, message.values, strict=True):
        try:
            decode_value(channel, value, max_nbytes=MAX_BYTES)
        except WireFormatError as error:
            assert error.kind in KINDS and error.reason
        try:
            decode_value_into(channel, value, slot)
        except WireFormatError as error:
            assert error.kind in KINDS and error.reason


def rehash(parts: list[bytes]) -> list[bytes]:
    """Make the main header's hash match the (mutated) data header, if the header is JSON."""
    try:
        main = json.loads(parts[0])
    except ValueError:
        return parts
    if isinstance(main, dict):
        main["hash"] = hashlib.md5(parts[1]).hexdigest()
        return [json.dumps(main).encode(), *parts[1:]]
    return parts


@st.composite
def mutated(draw: st.DrawFn, base: list[bytes]) -> list[bytes]:
    parts = list(base)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(parts) - 1))
        part = bytearray(parts[index])
        operation = draw(st.sampled_from(["flip", "truncate", "append", "uint32", "uint64", "drop"]))
        position = draw(st.integers(0, max(len(part) - 1, 0)))
        if operation == "flip" and part:
            part[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "truncate":
            del part[position:]
        elif operation == "append":
            part += draw(st.binary(min_size=1, max_size=20))
        elif operation == "uint32" and len(part) >= 4:
            position = min(position, len(part) - 4)
            struct.pack_into(">I", part, position, draw(st.integers(0, 2**32 - 1)))
        elif operation == "uint64" and len(part) >= 8:
            position = min(position, len(part) - 8)
            struct.pack_into(">Q", part, position, draw(st.integers(0, 2**64 - 1)))
        elif operation == "drop" and len(parts) > 1:
            del parts[index]
            continue
        parts[index] = bytes(part)
    return rehash(parts) if draw(st.booleans()) else parts


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_random_parts(parts: list[bytes]) -> None:
    exercise_bsread(parts)
    with contextlib.suppress(WireFormatError):
        decode_array10(parts)


@FUZZ
@given(st.sampled_from(BASES).flatmap(mutated))
def test_mutated_bsread_messages(parts: list[bytes]) -> None:
    exercise_bsread(parts)


@FUZZ
@given(
    st.sampled_from(["htype", "pulse_id", "global_timestamp", "hash", "dh_compression"]),
    json_values,
    st.sampled_from(["name", "type", "shape", "encoding", "compression"]),
    json_values,
)
def test_json_fields_with_arbitrary_values(main_key: str, main_value: Any, key: str, value: Any) -> None:
    base = BASES[0]
    header = json.loads(base[1])
    header["channels"][0][key] = value
    data_header = json.dumps(header).encode()
    main = json.loads(base[0])
    main["hash"] = hashlib.md5(data_header).hexdigest()
    exercise_bsread([json.dumps(main).encode(), data_header, *base[2:]])
    main[main_key] = main_value
    exercise_bsread([json.dumps(main).encode(), data_header, *base[2:]])


@FUZZ
@given(
    st.sampled_from([part for base in BASES for part in base[2::2] if part]),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 2**32 - 1)), min_size=1, max_size=4),
    st.integers(0, 2),
)
def test_compressed_values_with_lying_fields(
    value: bytes, lies: list[tuple[int, int]], itemsize_code: int
) -> None:
    raw = bytearray(value)
    for position, number in lies:
        if len(raw) >= 4:
            struct.pack_into(">I", raw, min(position, len(raw) - 4), number)
    out = bytearray(4096)
    dtype = ("u1", "<u2", "<f8")[itemsize_code]
    with contextlib.suppress(WireFormatError):
        bitshuffle_lz4_decompress_into(raw, out, dtype)
    with contextlib.suppress(WireFormatError):
        lz4_decompress_into(raw, out)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["htype", "shape", "type", "frame", "endianness", "encoding", "source"]),
        json_values
        | st.lists(st.integers(-3, 5), max_size=3)
        | st.sampled_from(["array-1.0", "uint16", "big"]),
    ),
    st.integers(0, 64),
)
def test_array10_headers_with_arbitrary_fields(fields: dict[str, Any], size: int) -> None:
    header = {"htype": "array-1.0", "shape": [2, 3], "type": "uint16", "frame": 1}
    header.update(fields)
    try:
        result, data = decode_array10([json.dumps(header).encode(), bytes(size)])
    except WireFormatError as error:
        assert error.reason
        return
    assert len(data) == result.nbytes
    assert result.array(data).shape == result.shape
