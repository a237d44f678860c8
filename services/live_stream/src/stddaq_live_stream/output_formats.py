"""The messages viewers receive: array-1.0 (std_daq's default) or BSREAD.

Each format turns (metadata, layout, image Frame) into the parts of one multipart message.
The image part (a Frame, or a ring slot libzmq sends as is) goes out without a further copy.

- array-1.0: [header, raw pixels]; the header bytes are exactly std_daq's.
- bsread: [main header, data header, value, timestamp] with one image channel of shape
  [W, H]; the value is the raw pixels, or the slot's bitshuffle-LZ4 chunk as is
  (compression "bitshuffle_lz4": the HDF5 filter chunk and BSREAD's value are the same bytes).
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from typing import Protocol

import numpy as np

from stddaq_common.bus.metadata import ImageMeta, PcoInfo
from stddaq_common.wire.array10 import Array10HeaderTemplate
from stddaq_common.wire.bsread import BsreadEncoder, ChannelSpec, bsread_type_of
from stddaq_common.wire.byte_views import byte_view
from stddaq_live_stream.image_layout import ImageLayout
from stddaq_live_stream.viewer_socket import Part

_LITTLE_TIMESTAMP = struct.Struct("<qq")
_ENCODER_CACHE_SIZE = 8


class OutputFormat(Protocol):
    """Builds the parts of one viewer message."""

    sends_compressed: bool
    """True if a compressed slot can be sent as is; False: it is decompressed first."""

    def parts(self, meta: ImageMeta, layout: ImageLayout, image: Part) -> list[Part]:
        """The message parts for one image (`image` compressed only if `layout.compressed`
        and `sends_compressed`)."""
        ...


class Array10Format:
    """array-1.0: `{"htype":"array-1.0", "shape":[H,W], "type":"uint16", "frame":id}` + pixels.

    The header is a template per shape and type: per image only the id is formatted."""

    sends_compressed = False

    def __init__(self) -> None:
        self._templates: dict[tuple[int, int, np.dtype[np.generic]], Array10HeaderTemplate] = {}
        self._last: tuple[ImageLayout, Array10HeaderTemplate] | None = None

    def header(self, meta: ImageMeta, layout: ImageLayout) -> bytes:
        """The header part of `meta`'s image (ValueError for a pixel type array-1.0 lacks)."""
        last = self._last
        if last is not None and last[0] is layout:  # the stream's layouts are cached: same object
            return last[1].header(meta.image_id)
        key = (layout.height, layout.width, layout.dtype)
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= _ENCODER_CACHE_SIZE:
                self._templates.clear()
            template = Array10HeaderTemplate((layout.height, layout.width), layout.dtype)
            self._templates[key] = template
        self._last = (layout, template)
        return template.header(meta.image_id)

    def parts(self, meta: ImageMeta, layout: ImageLayout, image: Part) -> list[Part]:
        """[header, pixels]."""
        return [self.header(meta, layout), image]


def global_timestamp_of(meta: ImageMeta) -> tuple[int, int]:
    """The image's (sec, ns): the camera's BSREAD timestamp for PCO images, else now."""
    detail = meta.detail
    if isinstance(detail, PcoInfo) and (detail.global_timestamp_sec or detail.global_timestamp_ns):
        return detail.global_timestamp_sec, detail.global_timestamp_ns
    now_ns = time.time_ns()
    return now_ns // 1_000_000_000, now_ns % 1_000_000_000


class BsreadFormat:
    """BSREAD with one image channel, readable by psi-bsread's receiver.

    Channel name: `channel_name` if given, else the PCO image's own bsread_name, else
    `default_name`.
    """

    sends_compressed = True

    def __init__(self, channel_name: str | None, default_name: str) -> None:
        self._channel_name = channel_name
        self._default_name = default_name
        self._encoders: OrderedDict[ChannelSpec, BsreadEncoder] = OrderedDict()

    def _name_for(self, meta: ImageMeta) -> str:
        if self._channel_name:
            return self._channel_name
        detail = meta.detail
        if isinstance(detail, PcoInfo) and detail.bsread_name:
            return detail.bsread_name
        return self._default_name

    def _encoder_for(self, channel: ChannelSpec) -> BsreadEncoder:
        encoder = self._encoders.get(channel)
        if encoder is None:
            encoder = BsreadEncoder([channel])
            self._encoders[channel] = encoder
            while len(self._encoders) > _ENCODER_CACHE_SIZE:
                self._encoders.popitem(last=False)
        return encoder

    def parts(self, meta: ImageMeta, layout: ImageLayout, image: Part) -> list[Part]:
        """[main header, data header, value, timestamp]."""
        channel = ChannelSpec.for_image(
            self._name_for(meta),
            layout.height,
            layout.width,
            bsread_type_of(layout.dtype),
            compression="bitshuffle_lz4" if layout.compressed else "none",
        )
        stamp = global_timestamp_of(meta)
        # The encoder makes the headers; the value is our Frame, sent as is (already
        # copied, or already compressed), so it is passed as "missing" and put in here.
        main, data_header, _, _ = self._encoder_for(channel).encode(meta.image_id, stamp, [None])
        return [_as_bytes(main), _as_bytes(data_header), image, _LITTLE_TIMESTAMP.pack(*stamp)]


def _as_bytes(part: object) -> bytes:
    """A header part as bytes (the encoder already makes bytes; anything else is copied)."""
    return part if isinstance(part, bytes) else bytes(byte_view(part))
