"""ImageMetaDecoder (the writer's reusing decoder) gives exactly what decode_image_metadata
gives: the same ImageMeta for any sequence of messages, the same MetadataError for bad bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stddaq_common.bus.metadata import (
    ImageMeta,
    ImageMetaDecoder,
    MetadataError,
    decode_image_metadata,
    encode_image_metadata,
)
from tests.common.test_protobuf import metas


def _outcome(decode: object, data: bytes) -> object:
    try:
        return decode(data)  # type: ignore[operator]
    except MetadataError as error:
        return ("error", str(error))


@settings(max_examples=200, deadline=None)
@given(st.lists(metas, min_size=1, max_size=8))
def test_a_reused_decoder_equals_decode_image_metadata(sequence: list[ImageMeta]) -> None:
    """Every kind of detector part (and none) after any other: nothing is carried over."""
    decoder = ImageMetaDecoder()
    for meta in sequence:
        data = encode_image_metadata(meta)
        assert decoder.decode(data) == decode_image_metadata(data) == meta
        assert decoder.decode(memoryview(data)) == meta


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=5), metas)
def test_bad_bytes_raise_the_same_error_and_leave_the_decoder_usable(
    garbage: list[bytes], meta: ImageMeta
) -> None:
    decoder = ImageMetaDecoder()
    good = encode_image_metadata(meta)
    for data in [*garbage, b"\x28\x03", b"\x30\x04", b"\x38\x07", b"\xff\xff\xff"]:
        assert _outcome(decoder.decode, data) == _outcome(decode_image_metadata, data)
        assert decoder.decode(good) == meta
