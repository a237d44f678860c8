"""The messages viewers receive: array-1.0 header bytes and BSREAD parts."""

from __future__ import annotations

import json

import numpy as np
import zmq

from stddaq_common.bus.metadata import Compression, Dtype, ImageMeta, PcoInfo
from stddaq_common.wire.bsread import BsreadDecoder, decode_value
from stddaq_common.wire.compression import bitshuffle_lz4_compress
from stddaq_live_stream.image_layout import layout_of
from stddaq_live_stream.output_formats import Array10Format, BsreadFormat


def test_array10_header_is_byte_for_byte_upstreams() -> None:
    meta = ImageMeta(3, 2016, 2016, 2016 * 2016 * 2, Dtype.UINT16)
    pixels = zmq.Frame(b"\0" * meta.size)
    header, data = Array10Format().parts(meta, layout_of(meta, meta.size), pixels)
    assert header == b'{"htype":"array-1.0", "shape":[2016,2016], "type":"uint16", "frame":3}'
    assert data is pixels


def test_bsread_parts_decode_to_the_image_with_the_camera_timestamp() -> None:
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    meta = ImageMeta(77, 3, 4, image.nbytes, Dtype.UINT16, detail=PcoInfo(1_700_000_000, 5, "CAM:FPICTURE"))
    layout = layout_of(meta, image.nbytes)
    parts = BsreadFormat(None, "fallback").parts(meta, layout, zmq.Frame(image.tobytes()))
    message = BsreadDecoder().decode([p.bytes if isinstance(p, zmq.Frame) else p for p in parts])
    assert message.pulse_id == 77
    assert message.global_timestamp == (1_700_000_000, 5)
    (channel,) = message.channels
    assert (channel.name, channel.type, channel.shape, channel.compression) == (
        "CAM:FPICTURE", "uint16", (4, 3), "none"
    )
    assert np.array_equal(decode_value(channel, message.values[0]), image)
    assert message.timestamps == [(1_700_000_000, 5)]


def test_bsread_sends_a_compressed_slot_as_is() -> None:
    image = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    chunk = bitshuffle_lz4_compress(image)
    meta = ImageMeta(5, 64, 64, len(chunk), Dtype.UINT16, compression=Compression.H5BITSHUFFLE_LZ4)
    frame = zmq.Frame(chunk)
    parts = BsreadFormat("IMG", "fallback").parts(meta, layout_of(meta, len(chunk)), frame)
    assert parts[2] is frame
    data_header = json.loads(parts[1])  # type: ignore[arg-type]
    assert data_header["channels"][0]["compression"] == "bitshuffle_lz4"
    message = BsreadDecoder().decode([p.bytes if isinstance(p, zmq.Frame) else p for p in parts])
    assert np.array_equal(decode_value(message.channels[0], message.values[0]), image)
