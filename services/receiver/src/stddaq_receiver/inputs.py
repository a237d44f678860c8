"""Input formats: the parts of one received message -> an `IncomingFrame` (no copy).

BSREAD (PCO cameras, psi-bsread's Sender) and array-1.0 both become the same thing: an
image id, the raw value bytes (zero-copy views of the message parts, possibly compressed),
their pixel type and numpy shape, and the metadata detail. Decoding errors raise
`WireFormatError` (from stddaq_common's codecs) or `FrameRejected`; nothing is written here.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from stddaq_common.bus.metadata import PcoInfo
from stddaq_common.wire.array10 import decode_array10
from stddaq_common.wire.bsread import TIMESTAMP_BYTES, BsreadDecoder, ChannelSpec, bsread_type_of
from stddaq_common.wire.byte_views import BufferLike
from stddaq_common.wire.errors import HEADER, MISSING, PARTS, SIZE, WireFormatError

_NO_VALUE = memoryview(b"")

_HeadTemplate = tuple[np.dtype[np.generic], tuple[int, ...], ChannelSpec | None, str, int]

InputFormat = Literal["bsread", "array-1.0"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("bsread", "array-1.0")


@dataclass(slots=True)
class IncomingFrame:
    """One decoded frame, still in the message's memory."""

    image_id: int
    value: memoryview
    """The value bytes as sent (compressed if `channel.compression` says so)."""
    dtype: np.dtype[np.generic]
    """Pixel type of the decoded value, in the byte order the decoded bytes have."""
    shape: tuple[int, ...]
    """numpy shape of the decoded value (slowest first)."""
    channel: ChannelSpec | None
    """The BSREAD channel when the value is compressed (needed to decompress), else None."""
    detail: PcoInfo | None
    parts: int = 0
    """How many parts the whole message has (set by `decode_head`; 0: not known)."""


class FrameDecoder(Protocol):
    """Turns the parts of one message into an IncomingFrame."""

    value_index: int
    """Index of the part holding the image value, when the parts before it say where the
    value goes (`decode_head`); -1 when the whole message is needed first."""

    def decode(self, parts: Sequence[BufferLike]) -> IncomingFrame:
        """Decode one message; WireFormatError if it is malformed."""

    def decode_head(self, heads: Sequence[BufferLike]) -> IncomingFrame:
        """The frame as its first `value_index` parts describe it, with an empty value
        (the value has not arrived yet); WireFormatError if they are malformed."""

    def check_rest(self, head: IncomingFrame, parts: Sequence[Sized]) -> None:
        """WireFormatError unless the whole message (`parts`, the first ones those
        `decode_head` read) is one `decode` would accept."""


class BsreadFrames:
    """BSREAD messages: the image is channel 0, the image id is the pulse_id.

    A data header without type and shape (psi-bsread's Sender without metadata) is read
    with the config's pixel type and [W, H]; the value's size must then match.
    """

    value_index = 2

    def __init__(self, height: int, width: int, dtype: np.dtype[np.generic]) -> None:
        self._decoder = BsreadDecoder(default_type=bsread_type_of(dtype), default_shape=(width, height))
        self._head_channels: tuple[ChannelSpec, ...] = ()
        self._head_template: _HeadTemplate | None = None
        """For the channels of the last `decode_head`: the frame's dtype, shape, channel (None
        when uncompressed), channel name and part count."""

    def decode_head(self, heads: Sequence[BufferLike]) -> IncomingFrame:
        """The frame its main and data header describe (value empty)."""
        pulse_id, seconds, nanoseconds, channels = self._decoder.head(heads[0], heads[1])
        template = self._head_template
        if channels is not self._head_channels or template is None:
            if not channels:
                raise WireFormatError("BSREAD data header has no channels", HEADER)
            first = self._frame(0, (0, 0), channels[0], _NO_VALUE)
            template = (first.dtype, first.shape, first.channel, channels[0].name, 2 + 2 * len(channels))
            self._head_channels, self._head_template = channels, template
        dtype, shape, channel, name, parts = template
        detail = PcoInfo(seconds, nanoseconds, name)
        return IncomingFrame(pulse_id, _NO_VALUE, dtype, shape, channel, detail, parts)

    def check_rest(self, head: IncomingFrame, parts: Sequence[Sized]) -> None:
        """The part count the data header asks for, each timestamp part 16 octets (or empty)."""
        if len(parts) != head.parts:
            raise WireFormatError(
                f"BSREAD message with {head.parts // 2 - 1} channel(s) needs {head.parts} parts, "
                f"got {len(parts)}",
                PARTS,
            )
        for index in range(3, len(parts), 2):
            size = len(parts[index])
            if size not in (0, TIMESTAMP_BYTES):
                raise WireFormatError(f"timestamp part {index} has {size} bytes, expected 16", SIZE)

    def decode(self, parts: Sequence[BufferLike]) -> IncomingFrame:
        """Decode one BSREAD message (its parts stay referenced through the views)."""
        message = self._decoder.decode(parts)
        if not message.channels:
            raise WireFormatError("BSREAD data header has no channels", HEADER)
        channel = message.channels[0]
        value = message.values[0]
        if value is None:
            raise WireFormatError(f"channel {channel.name!r} value is missing (sent empty)", MISSING)
        return self._frame(message.pulse_id, message.global_timestamp, channel, value)

    @staticmethod
    def _frame(
        pulse_id: int, stamp: tuple[int, int], channel: ChannelSpec, value: memoryview
    ) -> IncomingFrame:
        detail = PcoInfo(stamp[0], stamp[1], channel.name)
        if channel.compression == "none":
            return IncomingFrame(pulse_id, value, channel.numpy_dtype, channel.image_shape, None, detail)
        # decode_value_into leaves decompressed values in little-endian order
        little = channel.numpy_dtype.newbyteorder("<")
        return IncomingFrame(pulse_id, value, little, channel.image_shape, channel, detail)


class Array10Frames:
    """array-1.0 messages: header (shape [H, W], type, frame, endianness) + raw pixels.

    The metadata carries a `pco` detail only for detector_type pco, with the header's
    `source` as the name and no timestamp (array-1.0 has none).
    """

    value_index = -1

    def __init__(self, with_pco_detail: bool) -> None:
        self._with_pco_detail = with_pco_detail

    def decode_head(self, heads: Sequence[BufferLike]) -> IncomingFrame:
        """Not used: array-1.0 values are taken with the whole message (value_index -1)."""
        raise WireFormatError("array-1.0 frames are decoded whole", PARTS)

    def check_rest(self, head: IncomingFrame, parts: Sequence[Sized]) -> None:
        """Not used (value_index -1)."""
        raise WireFormatError("array-1.0 frames are decoded whole", PARTS)

    def decode(self, parts: Sequence[BufferLike]) -> IncomingFrame:
        """Decode one array-1.0 message."""
        header, data = decode_array10(parts)
        detail = PcoInfo(0, 0, header.source or "") if self._with_pco_detail else None
        return IncomingFrame(header.frame, data, header.dtype, header.shape, None, detail)


def frame_decoder(
    input_format: InputFormat, height: int, width: int, dtype: np.dtype[np.generic], detector_type: str
) -> FrameDecoder:
    """The decoder of one input format for the config's image."""
    if input_format == "bsread":
        return BsreadFrames(height, width, dtype)
    return Array10Frames(with_pco_detail=detector_type == "pco")
