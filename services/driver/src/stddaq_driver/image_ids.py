"""The image id of a raw ImageMetadata message, read without decoding the whole message.

The driver forwards the published bytes unchanged and only needs the id to deal the image.
Protobuf writes fields in field-number order, so `image_id` (field 1, varint, tag 0x08)
normally comes first; anything else falls back to the full decoder of stddaq_common.
"""

from __future__ import annotations

from stddaq_common.bus.metadata import MetadataError, decode_image_metadata

_IMAGE_ID_TAG = 0x08
_MAX_VARINT_BYTES = 10


def image_id_of(raw: bytes) -> int:
    """The `image_id` of ImageMetadata bytes; raise MetadataError if they hold none."""
    if raw and raw[0] == _IMAGE_ID_TAG:
        value = 0
        shift = 0
        for position in range(1, min(len(raw), 1 + _MAX_VARINT_BYTES)):
            byte = raw[position]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value >= 1 << 64:
                    raise MetadataError("ImageMetadata.image_id does not fit in 64 bits")
                return value
            shift += 7
        raise MetadataError("ImageMetadata.image_id is a truncated varint")
    # image_id 0 is not written at all in proto3, or a producer ordered fields differently.
    return decode_image_metadata(raw).image_id
