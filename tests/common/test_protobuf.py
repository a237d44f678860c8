"""ImageMetadata on the wire: pinned bytes, compatibility with the spec's schema, enums,
bad input, and generated code that matches protos/."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from stddaq_common._proto import std_daq_protocol_pb2 as generated
from stddaq_common.bus.metadata import (
    Compression,
    DetectorInfo,
    Dtype,
    EgInfo,
    GfInfo,
    ImageMeta,
    ImageMetaEncoder,
    JfInfo,
    MetadataError,
    PcoInfo,
    Status,
    decode_image_metadata,
    encode_image_metadata,
)
from tests.common.spec_schema import ENUMS, MESSAGES, PACKAGE, spec_classes

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "protos"
GENERATED_DIR = REPO / "libs" / "stddaq_common" / "src" / "stddaq_common" / "_proto"

SPEC = spec_classes()
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1


# --- (a) golden bytes, written out from the proto3 wire rules --------------------------
# A tag is one varint (field_number << 3 | wire_type): wire type 0 = varint, 2 = length-
# delimited. Varints are little-endian groups of 7 bits, high bit set on all but the last.
# Fields at their default value (0, "", false) are not written in proto3; a set oneof
# member is always written, even when empty.

PCO_NAME = "X02DA-CAM1:FPICTURE-µ"  # 22 bytes in UTF-8 ("µ" is c2 b5)

GOLDEN_PCO = ImageMeta(
    image_id=U64_MAX,
    height=2016,
    width=2560,
    size=2016 * 2560 * 2,  # 10321920 = 0x9d8000
    dtype=Dtype.FLOAT64,
    status=Status.ID_MISSMATCH,
    compression=Compression.BLOSC2,
    detail=PcoInfo(global_timestamp_sec=1_700_000_000, global_timestamp_ns=999_999_999, bsread_name=PCO_NAME),
)
GOLDEN_PCO_BYTES = b"".join(
    [
        bytes([0x08]),  # field 1 image_id, varint
        bytes([0xFF] * 9 + [0x01]),  # 2**64-1: nine groups of 7 ones, then the 64th bit
        bytes([0x10]),  # field 2 height, varint
        bytes([0xE0, 0x0F]),  # 2016 = 0b1111_1100000: 0x60|0x80, 0x0f
        bytes([0x18]),  # field 3 width, varint
        bytes([0x80, 0x14]),  # 2560 = 20 * 128: 0x00|0x80, 0x14
        bytes([0x20]),  # field 4 size, varint
        bytes([0x80, 0x80, 0xF6, 0x04]),  # 0x9d8000: groups 0x00, 0x00, 0x76, 0x04
        bytes([0x28, 0x1C]),  # field 5 dtype, varint: float64 = 28
        bytes([0x30, 0x03]),  # field 6 status, varint: id_missmatch = 3
        bytes([0x38, 0x02]),  # field 7 compression, varint: blosc2 = 2
        bytes([0x5A, 0x24]),  # field 11 pco (11 << 3 | 2), length 36
        bytes([0x08]),  # .. field 1 global_timestamp_sec, varint
        bytes([0x80, 0xE2, 0xCF, 0xAA, 0x06]),  # .. 1700000000 = 0x6553f100
        bytes([0x10]),  # .. field 2 global_timestamp_ns, varint
        bytes([0xFF, 0x93, 0xEB, 0xDC, 0x03]),  # .. 999999999 = 0x3b9ac9ff
        bytes([0x1A, 0x16]),  # .. field 3 bsread_name, length-delimited, 22 bytes
        PCO_NAME.encode("utf-8"),
    ]
)

GOLDEN_GF = ImageMeta(7, 1, 1, 2, Dtype.UINT16, detail=GfInfo(U32_MAX, 300, 7, 2**63, 1000, True))
GOLDEN_GF_BYTES = b"".join(
    [
        bytes([0x08, 0x07]),  # image_id 7
        bytes([0x10, 0x01]),  # height 1
        bytes([0x18, 0x01]),  # width 1
        bytes([0x20, 0x02]),  # size 2
        bytes([0x28, 0x02]),  # dtype uint16 = 2
        bytes([0x30, 0x01]),  # status good_image = 1 (compression none = 0: not written)
        bytes([0x42, 0x1B]),  # field 8 gf (8 << 3 | 2), length 27
        bytes([0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),  # .. scan_id 2**32-1: 4 x 7 ones, 0x0f
        bytes([0x10, 0xAC, 0x02]),  # .. scan_time 300 = 0x12c: 0x2c|0x80, 0x02
        bytes([0x18, 0x07]),  # .. sync_time 7
        bytes([0x20] + [0x80] * 9 + [0x01]),  # .. frame_timestamp 2**63: 9 empty groups, 1
        bytes([0x28, 0xE8, 0x07]),  # .. exposure_time 1000 = 0x3e8: 0x68|0x80, 0x07
        bytes([0x30, 0x01]),  # .. store_image true
    ]
)

GOLDEN_JF = ImageMeta(
    1, 2, 3, 4, Dtype.INT8, Status.MISSING_PACKETS, Compression.H5BITSHUFFLE_LZ4, JfInfo(2**35)
)
GOLDEN_JF_BYTES = b"".join(
    [
        bytes([0x08, 0x01, 0x10, 0x02, 0x18, 0x03, 0x20, 0x04]),  # image_id, height, width, size
        bytes([0x28, 0x0B]),  # dtype int8 = 11
        bytes([0x30, 0x02]),  # status missing_packets = 2
        bytes([0x38, 0x01]),  # compression h5bitshuffle_lz4 = 1
        bytes([0x4A, 0x07]),  # field 9 jf (9 << 3 | 2), length 7
        bytes([0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),  # .. daq_rec 2**35: 5 empty groups, 1
    ]
)

GOLDEN_EG = ImageMeta(0, 0, 0, 0, Dtype.UNKNOWN, Status.UNDEFINED, Compression.NONE, EgInfo(150))
GOLDEN_EG_BYTES = b"".join(
    [
        # every top-level field is at its default: none is written
        bytes([0x52, 0x03]),  # field 10 eg (10 << 3 | 2), length 3
        bytes([0x08, 0x96, 0x01]),  # .. exptime 150 = 0x96: 0x16|0x80, 0x01
    ]
)

GOLDEN = [
    pytest.param(GOLDEN_PCO, GOLDEN_PCO_BYTES, id="pco"),
    pytest.param(GOLDEN_GF, GOLDEN_GF_BYTES, id="gf"),
    pytest.param(GOLDEN_JF, GOLDEN_JF_BYTES, id="jf"),
    pytest.param(GOLDEN_EG, GOLDEN_EG_BYTES, id="eg"),
    pytest.param(
        ImageMeta(0, 0, 0, 0, Dtype.UNKNOWN, Status.UNDEFINED, Compression.NONE, JfInfo(0)),
        bytes([0x4A, 0x00]),  # an empty oneof member is still written: field 9, length 0
        id="empty-jf",
    ),
    pytest.param(
        ImageMeta(0, 0, 0, 0, Dtype.UNKNOWN, Status.UNDEFINED, Compression.NONE, None),
        b"",  # all defaults, no oneof member: the empty message
        id="all-default",
    ),
]


@pytest.mark.parametrize(("meta", "wire"), GOLDEN)
def test_encoding_matches_the_hand_written_bytes(meta: ImageMeta, wire: bytes) -> None:
    assert encode_image_metadata(meta).hex(" ") == wire.hex(" ")


def test_the_reusing_encoder_writes_the_hand_written_bytes_in_any_order() -> None:
    """One encoder over every golden message, twice and in both orders: a field or detail
    of the message before never leaks into the next."""
    encoder = ImageMetaEncoder()
    for param in [*GOLDEN, *GOLDEN[::-1], *GOLDEN]:
        meta, wire = param.values
        assert encoder.encode(meta).hex(" ") == wire.hex(" ")  # type: ignore[union-attr]


@pytest.mark.parametrize(("meta", "wire"), GOLDEN)
def test_decoding_the_hand_written_bytes(meta: ImageMeta, wire: bytes) -> None:
    assert decode_image_metadata(wire) == meta
    assert decode_image_metadata(memoryview(wire)) == meta


def test_the_pco_golden_message_is_fully_populated() -> None:
    """Every top-level field of the pco golden message differs from its default."""
    message = SPEC["ImageMetadata"].FromString(GOLDEN_PCO_BYTES)
    for field in message.DESCRIPTOR.fields:
        if field.containing_oneof is None:
            assert message.HasField(field.name) if field.has_presence else getattr(message, field.name)
    assert message.WhichOneof("image_metadata") == "pco"
    assert all(getattr(message.pco, f.name) for f in message.pco.DESCRIPTOR.fields)


def test_unknown_fields_from_a_newer_schema_are_ignored() -> None:
    newer = GOLDEN_PCO_BYTES + bytes([0x60, 0x05])  # field 12 (not in the spec), varint 5
    assert decode_image_metadata(newer) == GOLDEN_PCO


# --- (b) compatibility with the spec's schema, built independently ---------------------

u64 = st.integers(0, U64_MAX)
u32 = st.integers(0, U32_MAX)
details: st.SearchStrategy[DetectorInfo | None] = st.one_of(
    st.none(),
    st.builds(PcoInfo, u64, u64, st.text(max_size=40)),
    st.builds(GfInfo, u32, u32, u32, u64, u64, st.booleans()),
    st.builds(JfInfo, u64),
    st.builds(EgInfo, u64),
)
metas = st.builds(
    ImageMeta,
    u64,
    u64,
    u64,
    u64,
    st.sampled_from(Dtype),
    st.sampled_from(Status),
    st.sampled_from(Compression),
    details,
)

_ONEOF_OF_DETAIL = {PcoInfo: "pco", GfInfo: "gf", JfInfo: "jf", EgInfo: "eg"}


def spec_message(meta: ImageMeta) -> Any:
    """The same metadata as a message of the hand-built spec schema."""
    message = SPEC["ImageMetadata"](
        image_id=meta.image_id,
        height=meta.height,
        width=meta.width,
        size=meta.size,
        dtype=int(meta.dtype),
        status=int(meta.status),
        compression=int(meta.compression),
    )
    if meta.detail is not None:
        member = getattr(message, _ONEOF_OF_DETAIL[type(meta.detail)])
        for name in meta.detail.__slots__:
            setattr(member, name, getattr(meta.detail, name))
        member.SetInParent()
    return message


@settings(max_examples=300, deadline=None)
@given(metas)
def test_our_bytes_decode_with_the_spec_schema(meta: ImageMeta) -> None:
    parsed = SPEC["ImageMetadata"].FromString(encode_image_metadata(meta))
    assert parsed == spec_message(meta)
    assert parsed.WhichOneof("image_metadata") == (
        None if meta.detail is None else _ONEOF_OF_DETAIL[type(meta.detail)]
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(metas, min_size=1, max_size=6))
def test_the_reusing_encoder_equals_encode_image_metadata(sequence: list[ImageMeta]) -> None:
    encoder = ImageMetaEncoder()
    for meta in sequence:
        assert encoder.encode(meta) == encode_image_metadata(meta)


@settings(max_examples=300, deadline=None)
@given(metas)
def test_spec_schema_bytes_decode_with_ours(meta: ImageMeta) -> None:
    assert decode_image_metadata(spec_message(meta).SerializeToString()) == meta


def _fields(message: descriptor_pb2.DescriptorProto) -> list[tuple[Any, ...]]:
    oneofs = [oneof.name for oneof in message.oneof_decl]
    return sorted(
        (
            f.name,
            f.number,
            f.type,
            f.label,
            f.type_name.rsplit(".", 1)[-1],
            oneofs[f.oneof_index] if f.HasField("oneof_index") else None,
        )
        for f in message.field
    )


def test_generated_schema_equals_the_spec_schema() -> None:
    """Every message, field number, type, oneof and enum value of protos/ is the spec's."""
    ours = descriptor_pb2.FileDescriptorProto()
    generated.DESCRIPTOR.CopyToProto(ours)
    assert ours.package == PACKAGE and ours.syntax == "proto3"
    spec = SPEC["ImageMetadata"].DESCRIPTOR.file
    spec_proto = descriptor_pb2.FileDescriptorProto()
    spec.CopyToProto(spec_proto)
    assert {m.name: _fields(m) for m in ours.message_type} == {
        m.name: _fields(m) for m in spec_proto.message_type
    }
    assert {e.name: [(v.name, v.number) for v in e.value] for e in ours.enum_type} == ENUMS
    assert set(MESSAGES) == {m.name for m in ours.message_type}


# --- (c) enums -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "spec_name"),
    [
        (Dtype, "ImageMetadataDtype"),
        (Status, "ImageMetadataStatus"),
        (Compression, "ImageMetadataCompression"),
    ],
)
def test_enum_names_and_values_are_the_specs(ours: type[Any], spec_name: str) -> None:
    assert [(member.name, member.value) for member in ours] == [
        (name.upper(), number) for name, number in ENUMS[spec_name]
    ]
    generated_enum = generated.DESCRIPTOR.enum_types_by_name[spec_name]
    assert [(v.name, v.number) for v in generated_enum.values] == ENUMS[spec_name]


def test_upstream_misspelling_is_kept() -> None:
    assert Status.ID_MISSMATCH.value == 3
    status = generated.DESCRIPTOR.enum_types_by_name["ImageMetadataStatus"]
    assert status.values_by_name["id_missmatch"].number == 3


# --- (d) bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"\xff\xff\xff", "not an ImageMetadata"),  # a varint that never ends
        (b"\x0a\x05ab", "not an ImageMetadata"),  # length 5, only 2 bytes follow
        (b"\x0f", "not an ImageMetadata"),  # wire type 7 does not exist
        (b"\x08", "not an ImageMetadata"),  # a tag without its value
        (b"\x5a\x24" + GOLDEN_PCO_BYTES[-30:], "not an ImageMetadata"),  # truncated submessage
        (b"\x28\x03", "dtype has unknown value 3"),
        (b"\x30\x04", "status has unknown value 4"),
        (b"\x38\x07", "compression has unknown value 7"),
    ],
)
def test_garbage_raises_metadata_error(garbage: bytes, reason: str) -> None:
    with pytest.raises(MetadataError, match=reason):
        decode_image_metadata(garbage)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_decode_or_raise_metadata_error(data: bytes) -> None:
    with contextlib.suppress(MetadataError):
        decode_image_metadata(data)


# --- (e) the committed generated code is what protoc makes of protos/ ---------------------


def test_committed_generated_code_is_current(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpc_tools (grpcio-tools) is not installed: cannot run protoc")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(PROTO_DIR / "std_daq_protocol.proto"),
        ],
        check=True,
        capture_output=True,
    )
    for name in ("std_daq_protocol_pb2.py", "std_daq_protocol_pb2.pyi"):
        fresh = (tmp_path / name).read_bytes()
        committed = (GENERATED_DIR / name).read_bytes()
        assert fresh == committed, f"{name} is stale: run `make proto` (scripts/gen_proto.sh)"
