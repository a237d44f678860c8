"""ImageMetadata and the driver/writer messages: plain Python objects <-> protobuf bytes.

The only module that touches the generated protobuf classes (stddaq_common._proto).
Bytes are wire-compatible with std_daq's `std_daq_protocol` package.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from stddaq_common._proto import std_daq_protocol_pb2 as pb

if TYPE_CHECKING:
    import numpy as np


class MetadataError(ValueError):
    """Bytes that are not a valid ImageMetadata message."""


class Dtype(IntEnum):
    """ImageMetadataDtype: the pixel type of an image."""

    UNKNOWN = 0
    UINT8 = 1
    UINT16 = 2
    UINT32 = 4
    UINT64 = 8
    INT8 = 11
    INT16 = 12
    INT32 = 14
    INT64 = 18
    FLOAT16 = 22
    FLOAT32 = 24
    FLOAT64 = 28


class Status(IntEnum):
    """ImageMetadataStatus (ID_MISSMATCH keeps upstream's spelling)."""

    UNDEFINED = 0
    GOOD_IMAGE = 1
    MISSING_PACKETS = 2
    ID_MISSMATCH = 3


class Compression(IntEnum):
    """ImageMetadataCompression: how the image bytes in the slot are compressed."""

    NONE = 0
    H5BITSHUFFLE_LZ4 = 1
    BLOSC2 = 2


_TYPESTR_OF_DTYPE: dict[Dtype, str] = {
    Dtype.UINT8: "<u1",
    Dtype.UINT16: "<u2",
    Dtype.UINT32: "<u4",
    Dtype.UINT64: "<u8",
    Dtype.INT8: "<i1",
    Dtype.INT16: "<i2",
    Dtype.INT32: "<i4",
    Dtype.INT64: "<i8",
    Dtype.FLOAT16: "<f2",
    Dtype.FLOAT32: "<f4",
    Dtype.FLOAT64: "<f8",
}
_DTYPE_OF_NUMPY = {value: key for key, value in _TYPESTR_OF_DTYPE.items()}
_NUMPY_OF_DTYPE: dict[Dtype, np.dtype[np.generic]] = {}
"""Filled on first use: numpy is imported only by what needs it (the driver never does,
and importing it costs every service's start)."""


def numpy_dtype(dtype: Dtype) -> np.dtype[np.generic]:
    """The little-endian numpy dtype of an ImageMetadataDtype (ValueError for UNKNOWN)."""
    found = _NUMPY_OF_DTYPE.get(dtype)
    if found is not None:
        return found
    try:
        typestr = _TYPESTR_OF_DTYPE[dtype]
    except KeyError:
        raise ValueError(f"no numpy dtype for {dtype!r}") from None
    import numpy  # lazy: see _NUMPY_OF_DTYPE

    found = _NUMPY_OF_DTYPE[dtype] = numpy.dtype(typestr)
    return found


def dtype_of(array_dtype: np.dtype[np.generic] | str) -> Dtype:
    """The ImageMetadataDtype of a numpy dtype (UNKNOWN where there is none)."""
    import numpy  # lazy: see _NUMPY_OF_DTYPE

    return _DTYPE_OF_NUMPY.get(numpy.dtype(array_dtype).newbyteorder("<").str, Dtype.UNKNOWN)


@dataclass(slots=True)
class PcoInfo:
    """PcoImageMetadata: the BSREAD global timestamp and channel name."""

    global_timestamp_sec: int = 0
    global_timestamp_ns: int = 0
    bsread_name: str = ""


@dataclass(slots=True)
class GfInfo:
    """GFImageMetadata (GigaFRoST)."""

    scan_id: int = 0
    scan_time: int = 0
    sync_time: int = 0
    frame_timestamp: int = 0
    exposure_time: int = 0
    store_image: bool = False


@dataclass(slots=True)
class JfInfo:
    """JFImageMetadata (JUNGFRAU)."""

    daq_rec: int = 0


@dataclass(slots=True)
class EgInfo:
    """EGImageMetadata (EIGER)."""

    exptime: int = 0


DetectorInfo = PcoInfo | GfInfo | JfInfo | EgInfo


@dataclass(slots=True)
class ImageMeta:
    """One ImageMetadata message: which image is in the ring, and what it is."""

    image_id: int
    height: int
    width: int
    size: int
    dtype: Dtype
    status: Status = Status.GOOD_IMAGE
    compression: Compression = Compression.NONE
    detail: DetectorInfo | None = None


def encode_image_metadata(meta: ImageMeta) -> bytes:
    """Serialise to std_daq_protocol.ImageMetadata bytes."""
    message = pb.ImageMetadata(
        image_id=meta.image_id,
        height=meta.height,
        width=meta.width,
        size=meta.size,
        dtype=int(meta.dtype),  # type: ignore[arg-type]
        status=int(meta.status),  # type: ignore[arg-type]
        compression=int(meta.compression),  # type: ignore[arg-type]
    )
    detail = meta.detail
    if isinstance(detail, PcoInfo):
        pco = message.pco
        pco.global_timestamp_sec = detail.global_timestamp_sec
        pco.global_timestamp_ns = detail.global_timestamp_ns
        pco.bsread_name = detail.bsread_name
        pco.SetInParent()
    elif isinstance(detail, GfInfo):
        message.gf.CopyFrom(
            pb.GFImageMetadata(
                scan_id=detail.scan_id,
                scan_time=detail.scan_time,
                sync_time=detail.sync_time,
                frame_timestamp=detail.frame_timestamp,
                exposure_time=detail.exposure_time,
                store_image=detail.store_image,
            )
        )
    elif isinstance(detail, JfInfo):
        message.jf.daq_rec = detail.daq_rec
        message.jf.SetInParent()
    elif isinstance(detail, EgInfo):
        message.eg.exptime = detail.exptime
        message.eg.SetInParent()
    return message.SerializeToString()


class ImageMetaEncoder:
    """encode_image_metadata for one thread, reusing one protobuf message (about half the
    cost per message): the same bytes."""

    __slots__ = ("_fixed", "_message")

    def __init__(self) -> None:
        self._message = pb.ImageMetadata()
        self._fixed: tuple[int, int, int, int, int, int] | None = None

    def encode(self, meta: ImageMeta) -> bytes:
        """Serialise to std_daq_protocol.ImageMetadata bytes (as encode_image_metadata)."""
        detail = meta.detail
        if detail is not None and not isinstance(detail, PcoInfo):
            return encode_image_metadata(meta)
        message = self._message
        fixed = (meta.height, meta.width, meta.size, int(meta.dtype), int(meta.status), int(meta.compression))
        if fixed != self._fixed:
            message.height, message.width, message.size = fixed[0], fixed[1], fixed[2]
            message.dtype, message.status, message.compression = fixed[3], fixed[4], fixed[5]  # type: ignore[assignment]
            self._fixed = fixed
        message.image_id = meta.image_id
        if detail is None:
            message.ClearField("image_metadata")
        else:
            pco = message.pco  # fetched anew: a member held across a ClearField is detached
            pco.global_timestamp_sec = detail.global_timestamp_sec
            pco.global_timestamp_ns = detail.global_timestamp_ns
            pco.bsread_name = detail.bsread_name
            pco.SetInParent()
        return message.SerializeToString()


# Lookup tables: a dict lookup is several times cheaper than an IntEnum construction on
# the decode hot path (each subscriber decodes every message of the stream).
_DTYPE_OF_VALUE: dict[int, Dtype] = {int(member): member for member in Dtype}
_STATUS_OF_VALUE: dict[int, Status] = {int(member): member for member in Status}
_COMPRESSION_OF_VALUE: dict[int, Compression] = {int(member): member for member in Compression}
_ImageMetadata = pb.ImageMetadata


def _unknown_enum(message: pb.ImageMetadata) -> MetadataError:
    for name, table in (
        ("dtype", _DTYPE_OF_VALUE),
        ("status", _STATUS_OF_VALUE),
        ("compression", _COMPRESSION_OF_VALUE),
    ):
        value = getattr(message, name)
        if value not in table:
            return MetadataError(f"ImageMetadata.{name} has unknown value {value}")
    return MetadataError("ImageMetadata has an unknown enum value")


def _detail_of(message: pb.ImageMetadata) -> DetectorInfo | None:
    which = message.WhichOneof("image_metadata")
    if which is None:
        return None
    if which == "pco":
        pco = message.pco
        return PcoInfo(pco.global_timestamp_sec, pco.global_timestamp_ns, pco.bsread_name)
    if which == "gf":
        gf = message.gf
        return GfInfo(
            gf.scan_id, gf.scan_time, gf.sync_time, gf.frame_timestamp, gf.exposure_time, gf.store_image
        )
    if which == "jf":
        return JfInfo(message.jf.daq_rec)
    return EgInfo(message.eg.exptime)


class ImageMetaDecoder:
    """decode_image_metadata for one thread, reusing one protobuf message (the same
    results and errors, about a third of the cost per message: the writer's hot path)."""

    __slots__ = ("_message",)

    def __init__(self) -> None:
        self._message = _ImageMetadata()

    def decode(self, data: bytes | memoryview) -> ImageMeta:
        """Parse ImageMetadata bytes (as decode_image_metadata); MetadataError if not one."""
        message = self._message
        try:
            message.ParseFromString(data if type(data) is bytes else bytes(data))
        except DecodeError as error:
            raise MetadataError(f"not an ImageMetadata message: {error}") from None
        return _meta_of(message)


def decode_image_metadata(data: bytes | memoryview) -> ImageMeta:
    """Parse std_daq_protocol.ImageMetadata bytes; raise MetadataError if they are not one."""
    message = _ImageMetadata()
    try:
        message.ParseFromString(bytes(data))
    except DecodeError as error:
        raise MetadataError(f"not an ImageMetadata message: {error}") from None
    return _meta_of(message)


def _meta_of(message: pb.ImageMetadata) -> ImageMeta:
    """The ImageMeta of a parsed ImageMetadata message; MetadataError for an unknown enum."""
    dtype = _DTYPE_OF_VALUE.get(message.dtype)
    status = _STATUS_OF_VALUE.get(message.status)
    compression = _COMPRESSION_OF_VALUE.get(message.compression)
    if dtype is None or status is None or compression is None:
        raise _unknown_enum(message)
    return ImageMeta(
        message.image_id,
        message.height,
        message.width,
        message.size,
        dtype,
        status,
        compression,
        _detail_of(message),
    )
