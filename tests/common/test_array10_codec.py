"""array-1.0: upstream's exact header bytes, tolerant decoding, and every malformed input."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from stddaq_common.wire.array10 import (
    ARRAY10_TYPES,
    Array10Header,
    decode_array10,
    decode_array10_header,
    encode_array10,
    encode_array10_header,
)
from stddaq_common.wire.errors import HEADER, JSON, PARTS, SIZE, WireFormatError


def test_header_bytes_are_exactly_upstreams() -> None:
    expected = b'{"htype":"array-1.0", "shape":[2016,2016], "type":"uint16", "frame":3}'
    assert encode_array10_header([2016, 2016], np.uint16, 3) == expected
    assert encode_array10_header((2016, 2016), "uint16", 3) == expected
    assert encode_array10_header([480, 640], np.dtype("<f4"), 12345678901) == (
        b'{"htype":"array-1.0", "shape":[480,640], "type":"float32", "frame":12345678901}'
    )


@pytest.mark.parametrize("type_name", ARRAY10_TYPES)
def test_round_trip_every_type(type_name: str) -> None:
    image = (np.arange(6 * 10) % 101).astype(type_name).reshape(6, 10)
    parts = encode_array10(image, 42)
    assert np.shares_memory(np.frombuffer(parts[1], np.uint8), image)
    header, data = decode_array10(parts)
    assert header == Array10Header(frame=42, shape=(6, 10), type=type_name)
    assert np.array_equal(header.array(data), image)


def test_big_endian_pixels() -> None:
    image = np.arange(12, dtype=">u2").reshape(3, 4)
    parts = encode_array10(image, 1)
    assert parts[0].endswith(b', "endianness":"big"}')  # type: ignore[union-attr]
    header, data = decode_array10(parts)
    assert header.endianness == "big" and header.dtype == np.dtype(">u2")
    assert bytes(data) == image.tobytes()
    assert np.array_equal(header.array(data), image)
    assert np.array_equal(header.array(data).astype("<u2"), np.arange(12).reshape(3, 4))


def test_non_contiguous_image_is_made_contiguous() -> None:
    image = np.arange(100, dtype=np.uint16).reshape(10, 10)[:, ::2]
    header, data = decode_array10(encode_array10(image, 0))
    assert np.array_equal(header.array(data), image)


def test_decoder_accepts_any_valid_json_with_the_fields() -> None:
    pixels = np.arange(8, dtype="<u2").tobytes()
    header_json = {
        "frame": 9,
        "type": "UINT16",
        "shape": [2, 4],
        "htype": ["array-1.0"],
        "source": "pco1",
        "encoding": "",
        "timeStamp": 12.5,
        "ndattr": {"a": 1},
    }
    header, data = decode_array10([json.dumps(header_json, indent=2).encode(), pixels])
    assert header == Array10Header(frame=9, shape=(2, 4), type="uint16", source="pco1", encoding="")
    assert np.array_equal(header.array(data), np.arange(8).reshape(2, 4))
    little = dict(header_json, endianness="little", encoding="raw")
    assert decode_array10([json.dumps(little).encode(), bytearray(pixels)])[0].endianness == "little"


def test_encoder_rejects_types_array10_does_not_have() -> None:
    with pytest.raises(ValueError, match="no type"):
        encode_array10(np.zeros(3, np.complex64), 0)
    with pytest.raises(ValueError, match="no type"):
        encode_array10_header([1], bool, 0)


def good_header(**changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"htype": "array-1.0", "shape": [2, 3], "type": "uint16", "frame": 1}
    for key, value in changes.items():
        if value is ...:
            del header[key]
        else:
            header[key] = value
    return header


def expect_error(kind: str, parts: list[Any]) -> str:
    with pytest.raises(WireFormatError) as caught:
        decode_array10(parts)
    assert caught.value.kind == kind, caught.value.reason
    return caught.value.reason


def test_wrong_number_of_parts() -> None:
    assert "1 part" in expect_error(PARTS, [json.dumps(good_header()).encode()])
    assert "3 part" in expect_error(PARTS, [b"{}", b"", b""])
    assert "not a buffer" in expect_error(PARTS, [json.dumps(good_header()).encode(), 12])


@pytest.mark.parametrize("header_part", [b"", b"{", b"\xff\xfe", b"[1]", b"null", b'"x"', b"[" * 50_000])
def test_header_not_a_json_object(header_part: bytes) -> None:
    expect_error(JSON, [header_part, b""])


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"htype": "array-2.0"}, "htype"),
        ({"htype": ...}, "htype"),
        ({"shape": ...}, "shape"),
        ({"shape": [2, -3]}, "shape"),
        ({"shape": [2.0, 3]}, "shape"),
        ({"shape": [True, 3]}, "shape"),
        ({"shape": []}, "shape"),
        ({"shape": [1] * 9}, "shape"),
        ({"shape": "2x3"}, "shape"),
        ({"type": ...}, "type"),
        ({"type": "uint128"}, "type"),
        ({"type": "bool"}, "type"),
        ({"type": 16}, "type"),
        ({"frame": ...}, "frame"),
        ({"frame": -1}, "frame"),
        ({"frame": 2**64}, "frame"),
        ({"frame": "1"}, "frame"),
        ({"frame": 1.0}, "frame"),
        ({"endianness": "middle"}, "endianness"),
        ({"endianness": 1}, "endianness"),
        ({"encoding": "bslz4"}, "encoding"),
        ({"source": 5}, "source"),
    ],
)
def test_bad_header_fields(changes: dict[str, Any], words: str) -> None:
    reason = expect_error(HEADER, [json.dumps(good_header(**changes)).encode(), bytes(12)])
    assert words in reason


@pytest.mark.parametrize("size", [0, 11, 13, 1000])
def test_data_size_must_match(size: int) -> None:
    reason = expect_error(SIZE, [json.dumps(good_header()).encode(), bytes(size)])
    assert f"{size} bytes" in reason and "needs 12" in reason


def test_huge_shape_is_a_size_error_not_an_allocation() -> None:
    expect_error(SIZE, [json.dumps(good_header(shape=[2**40, 2**40])).encode(), bytes(12)])


def test_header_alone() -> None:
    header = decode_array10_header(json.dumps(good_header(source="cam")).encode())
    assert header.nbytes == 12 and header.source == "cam"
