"""BSREAD messages: encoder <-> decoder round trips, header cache, and every malformed input."""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import numpy as np
import pytest
import zmq

from stddaq_common.wire.bsread import (
    BsreadDecoder,
    BsreadEncoder,
    decode_value,
    decode_value_into,
)
from stddaq_common.wire.bsread_channels import ChannelSpec, bsread_type_of, parse_channel
from stddaq_common.wire.compression import bitshuffle_lz4_compress, lz4_compress
from stddaq_common.wire.errors import (
    COMPRESSION,
    HASH,
    HEADER,
    JSON,
    MISSING,
    PARTS,
    SIZE,
    WireFormatError,
)

H, W = 48, 64
COMPRESSIONS = ["none", "bitshuffle_lz4", "lz4"]
HEADER_COMPRESSIONS = [None, "bitshuffle_lz4", "lz4"]


def image(dtype: str = "<u2", seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(100, (H, W)).astype(dtype)


def image_channel(compression: str = "none", encoding: str = "little", type_: str = "uint16") -> ChannelSpec:
    return ChannelSpec.for_image("camera:FPICTURE", H, W, type_, compression=compression, encoding=encoding)


def raw_message(
    main: dict[str, Any] | None = None,
    data_header: dict[str, Any] | None = None,
    values: list[bytes] | None = None,
) -> list[bytes]:
    """A message built by hand (JSON + parts), with a correct hash unless main overrides it."""
    header = data_header or {
        "htype": "bsr_d-1.1",
        "channels": [{"name": "img", "type": "uint16", "shape": [W, H]}],
    }
    header_bytes = json.dumps(header).encode()
    main_header = {
        "htype": "bsr_m-1.1",
        "pulse_id": 7,
        "global_timestamp": {"sec": 1700000000, "ns": 5},
        "hash": hashlib.md5(header_bytes).hexdigest(),
    }
    main_header.update(main or {})
    if values is None:
        values = [image().tobytes(), struct.pack("<qq", 1700000000, 5)]
    return [json.dumps(main_header).encode(), header_bytes, *values]


def expect_error(kind: str, parts: list[Any], decoder: BsreadDecoder | None = None) -> str:
    with pytest.raises(WireFormatError) as caught:
        (decoder or BsreadDecoder()).decode(parts)
    assert caught.value.kind == kind, caught.value.reason
    return caught.value.reason


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("dh_compression", HEADER_COMPRESSIONS)
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("encoding", ["little", "big"])
def test_round_trip(dh_compression: str | None, compression: str, encoding: str) -> None:
    frame = image()
    channels = [
        image_channel(compression, encoding),
        ChannelSpec("temperature"),
        ChannelSpec("note", "string"),
    ]
    encoder = BsreadEncoder(channels, dh_compression=dh_compression)
    parts = encoder.encode(1234, (1700000000, 999), [frame, 21.5, "hello"], [(1, 2), None, (3, 4)])
    message = BsreadDecoder().decode(parts)
    assert message.pulse_id == 1234
    assert message.global_timestamp == (1700000000, 999)
    assert message.hash == encoder.hash
    assert message.channels == tuple(channels)
    assert message.timestamps == [(1, 2), (1700000000, 999), (3, 4)]
    slot = bytearray(frame.nbytes + 100)
    assert decode_value_into(message.channels[0], message.values[0], slot) == frame.nbytes
    assert np.array_equal(np.frombuffer(slot, "<u2", frame.size).reshape(H, W), frame)
    decoded = decode_value(message.channels[0], message.values[0])
    assert decoded.shape == (H, W) and np.array_equal(decoded, frame)
    assert decode_value(message.channels[1], message.values[1]).tolist() == [21.5]
    assert decode_value(message.channels[2], message.values[2]).tobytes() == b"hello"


@pytest.mark.parametrize(
    "type_",
    [
        "bool",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "float16",
        "float32",
        "float64",
    ],
)
@pytest.mark.parametrize("encoding", ["little", "big"])
def test_every_type_and_byte_order(type_: str, encoding: str) -> None:
    code = {"bool": "?"}.get(type_, type_)
    values = (np.arange(H * W) % 97).astype(code).reshape(H, W)
    for compression in COMPRESSIONS:
        channel = image_channel(compression, encoding, type_)
        message = BsreadDecoder().decode(BsreadEncoder([channel]).encode(1, (0, 0), [values]))
        decoded = decode_value(channel, message.values[0])
        assert decoded.dtype.byteorder in ("|", "<" if encoding == "little" else ">", "=")
        assert np.array_equal(decoded, values)
        out = np.empty_like(values, dtype=np.dtype(code).newbyteorder("<"))
        decode_value_into(channel, message.values[0], out)
        assert np.array_equal(out, values)


def test_big_endian_bytes_on_the_wire_are_big_endian() -> None:
    frame = image()
    parts = BsreadEncoder([image_channel(encoding="big")]).encode(1, (5, 6), [frame])
    assert bytes(parts[2]) == frame.astype(">u2").tobytes()
    assert bytes(parts[3]) == struct.pack(">qq", 5, 6)


def test_uncompressed_values_are_zero_copy_both_ways() -> None:
    frame = image()
    parts = BsreadEncoder([image_channel()]).encode(1, (0, 0), [frame])
    assert np.shares_memory(np.frombuffer(parts[2], np.uint8), frame)
    message = BsreadDecoder().decode(parts)
    decoded = decode_value(message.channels[0], message.values[0])
    assert np.shares_memory(decoded, frame)


def test_missing_value_is_two_empty_parts() -> None:
    encoder = BsreadEncoder([image_channel(), ChannelSpec("x")])
    parts = encoder.encode(3, (0, 0), [None, 1.0])
    assert bytes(parts[2]) == b"" and bytes(parts[3]) == b""
    message = BsreadDecoder().decode(parts)
    assert message.values[0] is None and message.timestamps[0] is None
    with pytest.raises(WireFormatError) as caught:
        decode_value_into(message.channels[0], message.values[0], bytearray(H * W * 2))
    assert caught.value.kind == MISSING and "camera:FPICTURE" in caught.value.reason


def test_header_without_type_and_shape_uses_decoder_defaults() -> None:
    frame = image()
    encoder = BsreadEncoder([image_channel("bitshuffle_lz4")], with_type_and_shape=False)
    header = json.loads(encoder.data_header)
    assert header["channels"][0].keys() == {"name", "encoding", "compression"}
    parts = encoder.encode(9, (0, 0), [frame])
    message = BsreadDecoder(default_type="uint16", default_shape=[W, H]).decode(parts)
    assert np.array_equal(decode_value(message.channels[0], message.values[0]), frame)
    plain = BsreadDecoder().decode(parts)  # BSREAD defaults: float64, [1]
    assert plain.channels[0].type == "float64" and plain.channels[0].shape == (1,)
    with pytest.raises(WireFormatError) as caught:
        decode_value(plain.channels[0], plain.values[0])
    assert caught.value.kind == SIZE and "needs 8" in caught.value.reason


def test_data_header_cache_and_header_changed() -> None:
    decoder = BsreadDecoder()
    first = BsreadEncoder([image_channel()])
    second = BsreadEncoder([image_channel("lz4")])
    flags = []
    for encoder in (first, first, first, second, second, first):
        message = decoder.decode(encoder.encode(1, (0, 0), [image()]))
        flags.append(message.header_changed)
    assert flags == [True, False, False, True, False, True]
    assert decoder.headers_parsed == 2


def test_main_header_bytes() -> None:
    encoder = BsreadEncoder([image_channel()], dh_compression="lz4")
    main = json.loads(bytes(encoder.encode(5, (6, 7), [image()])[0]))
    assert main == {
        "htype": "bsr_m-1.1",
        "pulse_id": 5,
        "global_timestamp": {"sec": 6, "ns": 7},
        "hash": hashlib.md5(encoder.data_header).hexdigest(),
        "dh_compression": "lz4",
    }


def test_decoder_accepts_zmq_frames() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    try:
        for sock in (push, pull):
            sock.linger = 0
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        pull.rcvtimeo = 20_000
        frame = image()
        push.send_multipart(
            BsreadEncoder([image_channel("bitshuffle_lz4")]).encode(1, (0, 0), [frame]), copy=False
        )
        frames = pull.recv_multipart(copy=False)
        message = BsreadDecoder().decode(frames)
        slot = np.empty_like(frame)
        decode_value_into(message.channels[0], message.values[0], slot)
        assert np.array_equal(slot, frame)
    finally:
        push.close()
        pull.close()


def test_channel_spec_helpers() -> None:
    channel = ChannelSpec("img", "uint16", [W, H])  # type: ignore[arg-type]
    assert channel.shape == (W, H) and channel.image_shape == (H, W)
    assert channel.nbytes == H * W * 2 and channel.numpy_dtype == np.dtype("<u2")
    assert ChannelSpec("s", "string").nbytes is None
    assert bsread_type_of(np.dtype(">u2")) == "uint16" and bsread_type_of(bool) == "bool"
    with pytest.raises(ValueError):
        bsread_type_of(np.complex64)


def test_encoder_rejects_wrong_values() -> None:
    encoder = BsreadEncoder([image_channel()])
    with pytest.raises(ValueError, match="elements"):
        encoder.encode(1, (0, 0), [np.zeros((H, W + 1), np.uint16)])
    with pytest.raises(ValueError, match="uint16"):
        encoder.encode(1, (0, 0), [np.zeros((H, W), np.float32)])
    with pytest.raises(ValueError, match="channels"):
        encoder.encode(1, (0, 0), [])


# --- malformed input ---------------------------------------------------------------------


def test_valid_hand_built_message_decodes() -> None:
    message = BsreadDecoder().decode(raw_message())
    assert message.pulse_id == 7 and message.timestamps == [(1700000000, 5)]
    assert np.array_equal(decode_value(message.channels[0], message.values[0]), image())


def test_wrong_number_of_parts() -> None:
    parts = raw_message()
    assert "at least" in expect_error(PARTS, [])
    assert "at least" in expect_error(PARTS, parts[:1])
    assert "needs 4 parts, got 3" in expect_error(PARTS, parts[:3])
    assert "got 5" in expect_error(PARTS, [*parts, b""])
    assert "not a buffer" in expect_error(PARTS, [parts[0], parts[1], 5, parts[3]])


@pytest.mark.parametrize(
    ("main_part", "kind", "words"),
    [
        (b"", JSON, "not valid JSON"),
        (b"{not json", JSON, "not valid JSON"),
        (b"\xff\xfe\x00", JSON, "not valid JSON"),
        (b"[1, 2]", JSON, "not an object"),
        (b'"text"', JSON, "not an object"),
        (b"[" * 50_000, JSON, "not valid JSON"),
        (b" " * 70_000, SIZE, "more than"),
    ],
)
def test_bad_main_header_json(main_part: bytes, kind: str, words: str) -> None:
    parts = raw_message()
    assert words in expect_error(kind, [main_part, *parts[1:]])


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"htype": "bsr_m-1.0"}, "htype"),
        ({"htype": None}, "htype"),
        ({"pulse_id": None}, "pulse_id"),
        ({"pulse_id": -1}, "pulse_id"),
        ({"pulse_id": 2**64}, "pulse_id"),
        ({"pulse_id": "7"}, "pulse_id"),
        ({"pulse_id": True}, "pulse_id"),
        ({"pulse_id": 7.0}, "pulse_id"),
        ({"global_timestamp": 5}, "global_timestamp"),
        ({"global_timestamp": {"sec": 1}}, "global_timestamp.ns"),
        ({"global_timestamp": {"sec": -1, "ns": 0}}, "global_timestamp.sec"),
        ({"hash": 12}, "hash"),
        ({"hash": ""}, "hash"),
        ({"dh_compression": "zstd"}, "dh_compression"),
    ],
)
def test_bad_main_header_fields(override: dict[str, Any], words: str) -> None:
    assert words in expect_error(HEADER, raw_message(main=override))


def test_missing_pulse_id() -> None:
    parts = raw_message()
    main = json.loads(parts[0])
    del main["pulse_id"]
    assert "no pulse_id" in expect_error(HEADER, [json.dumps(main).encode(), *parts[1:]])


def test_old_epoch_timestamp_is_accepted() -> None:
    message = BsreadDecoder().decode(raw_message(main={"global_timestamp": {"epoch": 3, "ns": 4}}))
    assert message.global_timestamp == (3, 4)


def test_wrong_hash() -> None:
    assert "does not match" in expect_error(HASH, raw_message(main={"hash": "0" * 32}))


def test_changed_data_header_under_a_cached_hash_is_rejected() -> None:
    decoder = BsreadDecoder()
    parts = raw_message()
    decoder.decode(parts)
    other = json.dumps(
        {"htype": "bsr_d-1.1", "channels": [{"name": "img", "type": "uint8", "shape": [W, H]}]}
    )
    expect_error(HASH, [parts[0], other.encode(), *parts[2:]], decoder)


def test_compressed_data_header_that_does_not_decompress() -> None:
    bad = b"\x00\x00\x00\x00\x00\x00\x00\x40\x00\x00\x00\x08" + b"\x00\x00\x00\x30" + b"\x11" * 10
    for compression, header in (("bitshuffle_lz4", bad), ("lz4", b"\x40\x00\x00\x00" + b"\xff" * 9)):
        main = {"dh_compression": compression, "hash": hashlib.md5(header).hexdigest()}
        parts = raw_message(main=main)
        expect_error(COMPRESSION, [parts[0], header, *parts[2:]])


def test_compressed_data_header_that_is_not_json() -> None:
    header = lz4_compress(b"\x00garbage")
    parts = raw_message(main={"dh_compression": "lz4", "hash": hashlib.md5(header).hexdigest()})
    expect_error(JSON, [parts[0], header, *parts[2:]])
    huge = struct.pack(">QI", 2**40, 8192)
    parts = raw_message(main={"dh_compression": "bitshuffle_lz4", "hash": hashlib.md5(huge).hexdigest()})
    expect_error(SIZE, [parts[0], huge, *parts[2:]])


@pytest.mark.parametrize(
    ("data_header", "kind", "words"),
    [
        ({"htype": "bsr_d-1.0", "channels": []}, HEADER, "htype"),
        ({"htype": "bsr_d-1.1"}, HEADER, "channels"),
        ({"htype": "bsr_d-1.1", "channels": {"name": "x"}}, HEADER, "not a list"),
        ({"htype": "bsr_d-1.1", "channels": ["img"]}, HEADER, "not an object"),
        ({"htype": "bsr_d-1.1", "channels": [{"type": "uint16"}]}, HEADER, "no string name"),
        ({"htype": "bsr_d-1.1", "channels": [{"name": "i", "type": "uint128"}]}, HEADER, "unknown type"),
        ({"htype": "bsr_d-1.1", "channels": [{"name": "i", "type": 5}]}, HEADER, "not a string"),
        ({"htype": "bsr_d-1.1", "channels": [{"name": "i", "encoding": "middle"}]}, HEADER, "encoding"),
        ({"htype": "bsr_d-1.1", "channels": [{"name": "i", "compression": "zstd"}]}, HEADER, "compression"),
        ({"htype": "bsr_d-1.1", "channels": [{"name": "i", "shape": [-1, 5]}]}, HEADER, "invalid shape"),
        ({"htype": "bsr_d-1.1", "channels": [{"name": "i", "shape": []}]}, HEADER, "invalid shape"),
        ({"htype": "bsr_d-1.1", "channels": [{"name": "i", "shape": [1.5]}]}, HEADER, "shape"),
        ({"htype": "bsr_d-1.1", "channels": [{"name": "i", "shape": [True]}]}, HEADER, "shape"),
        ({"htype": "bsr_d-1.1", "channels": [{"name": "i", "shape": "[2, 2]"}]}, HEADER, "shape"),
        ({"htype": "bsr_d-1.1", "channels": [{"name": "i", "shape": [1] * 9}]}, HEADER, "invalid shape"),
        ({"htype": "bsr_d-1.1", "channels": [{"name": "i", "shape": [2**40, 2**40]}]}, SIZE, "allowed"),
        (
            {
                "htype": "bsr_d-1.1",
                "channels": [{"name": "i", "type": "uint16", "shape": [100_000, 100_000]}],
            },
            SIZE,
            "allowed",
        ),
    ],
)
def test_bad_data_header(data_header: dict[str, Any], kind: str, words: str) -> None:
    assert words in expect_error(kind, raw_message(data_header=data_header, values=[b"", b""]))


def test_data_header_that_is_not_json() -> None:
    parts = raw_message()
    header = b"\x00\x01not json"
    main = json.loads(parts[0])
    main["hash"] = hashlib.md5(header).hexdigest()
    expect_error(JSON, [json.dumps(main).encode(), header, *parts[2:]])


def test_max_value_bytes_is_configurable() -> None:
    parts = raw_message()
    assert "allowed 1000" in expect_error(SIZE, parts, BsreadDecoder(max_value_bytes=1000))


def test_bad_timestamp_part() -> None:
    parts = raw_message()
    assert "expected 16" in expect_error(SIZE, [*parts[:3], b"\x00" * 15])


def decoded_channel(compression: str, value: bytes) -> tuple[ChannelSpec, Any]:
    channel = parse_channel({"name": "img", "type": "uint16", "shape": [W, H], "compression": compression})
    return channel, value


@pytest.mark.parametrize(
    ("compression", "value", "kind"),
    [
        ("none", image().tobytes()[:-2], SIZE),
        ("none", image().tobytes() + b"\x00\x00", SIZE),
        ("bitshuffle_lz4", bitshuffle_lz4_compress(image()[:-1]), SIZE),
        ("bitshuffle_lz4", bitshuffle_lz4_compress(image())[:-5], COMPRESSION),
        ("bitshuffle_lz4", b"\x01", COMPRESSION),
        ("lz4", lz4_compress(image().tobytes()[:-2]), SIZE),
        ("lz4", lz4_compress(image().tobytes())[:-5], COMPRESSION),
        ("lz4", b"\x01\x02", COMPRESSION),
    ],
)
def test_bad_values(compression: str, value: bytes, kind: str) -> None:
    channel, raw = decoded_channel(compression, value)
    for call in (
        lambda: decode_value(channel, raw),
        lambda: decode_value_into(channel, raw, bytearray(H * W * 2 + 10)),
    ):
        with pytest.raises(WireFormatError) as caught:
            call()
        assert caught.value.kind == kind, caught.value.reason
        assert "'img'" in caught.value.reason


def test_value_larger_than_the_slot() -> None:
    channel = image_channel()
    with pytest.raises(WireFormatError) as caught:
        decode_value_into(channel, image().tobytes(), bytearray(100))
    assert caught.value.kind == SIZE and "output buffer" in caught.value.reason
    big_endian = image_channel(encoding="big")
    with pytest.raises(WireFormatError):
        decode_value_into(big_endian, image().astype(">u2").tobytes(), bytearray(100))


def test_wire_format_error_pickles() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(WireFormatError("bad", SIZE)))
    assert error.reason == "bad" and error.kind == SIZE and str(error) == "bad"
