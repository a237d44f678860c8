"""Reading the image id from raw ImageMetadata bytes without decoding everything."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stddaq_common.bus.metadata import (
    Dtype,
    GfInfo,
    ImageMeta,
    MetadataError,
    encode_image_metadata,
)
from stddaq_driver.image_ids import image_id_of


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_matches_the_full_decoder(image_id: int) -> None:
    raw = encode_image_metadata(
        ImageMeta(image_id, 2016, 2016, 2016 * 2016 * 2, Dtype.UINT16, detail=GfInfo(scan_id=3))
    )
    assert image_id_of(raw) == image_id


def test_id_zero_is_not_on_the_wire_and_still_read() -> None:
    raw = encode_image_metadata(ImageMeta(0, 4, 4, 32, Dtype.UINT16))
    assert raw[0] != 0x08
    assert image_id_of(raw) == 0


@pytest.mark.parametrize("raw", [b"\x08", b"\x08\xff\xff", b"\x08" + b"\xff" * 12])
def test_truncated_or_overlong_varints_are_refused(raw: bytes) -> None:
    with pytest.raises(MetadataError):
        image_id_of(raw)


def test_garbage_without_the_id_tag_is_refused() -> None:
    with pytest.raises(MetadataError):
        image_id_of(b"\xff\xff\xff\xff")
