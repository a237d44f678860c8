from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageMetadataDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    unknown: _ClassVar[ImageMetadataDtype]
    uint8: _ClassVar[ImageMetadataDtype]
    uint16: _ClassVar[ImageMetadataDtype]
    uint32: _ClassVar[ImageMetadataDtype]
    uint64: _ClassVar[ImageMetadataDtype]
    int8: _ClassVar[ImageMetadataDtype]
    int16: _ClassVar[ImageMetadataDtype]
    int32: _ClassVar[ImageMetadataDtype]
    int64: _ClassVar[ImageMetadataDtype]
    float16: _ClassVar[ImageMetadataDtype]
    float32: _ClassVar[ImageMetadataDtype]
    float64: _ClassVar[ImageMetadataDtype]

class ImageMetadataStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    undefined: _ClassVar[ImageMetadataStatus]
    good_image: _ClassVar[ImageMetadataStatus]
    missing_packets: _ClassVar[ImageMetadataStatus]
    id_missmatch: _ClassVar[ImageMetadataStatus]

class ImageMetadataCompression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    none: _ClassVar[ImageMetadataCompression]
    h5bitshuffle_lz4: _ClassVar[ImageMetadataCompression]
    blosc2: _ClassVar[ImageMetadataCompression]

class ResponseCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[ResponseCode]
    SUCCESS: _ClassVar[ResponseCode]
    FAILURE: _ClassVar[ResponseCode]
unknown: ImageMetadataDtype
uint8: ImageMetadataDtype
uint16: ImageMetadataDtype
uint32: ImageMetadataDtype
uint64: ImageMetadataDtype
int8: ImageMetadataDtype
int16: ImageMetadataDtype
int32: ImageMetadataDtype
int64: ImageMetadataDtype
float16: ImageMetadataDtype
float32: ImageMetadataDtype
float64: ImageMetadataDtype
undefined: ImageMetadataStatus
good_image: ImageMetadataStatus
missing_packets: ImageMetadataStatus
id_missmatch: ImageMetadataStatus
none: ImageMetadataCompression
h5bitshuffle_lz4: ImageMetadataCompression
blosc2: ImageMetadataCompression
UNKNOWN: ResponseCode
SUCCESS: ResponseCode
FAILURE: ResponseCode

class GFImageMetadata(_message.Message):
    __slots__ = ("scan_id", "scan_time", "sync_time", "frame_timestamp", "exposure_time", "store_image")
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    SCAN_TIME_FIELD_NUMBER: _ClassVar[int]
    SYNC_TIME_FIELD_NUMBER: _ClassVar[int]
    FRAME_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_TIME_FIELD_NUMBER: _ClassVar[int]
    STORE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    scan_id: int
    scan_time: int
    sync_time: int
    frame_timestamp: int
    exposure_time: int
    store_image: bool
    def __init__(self, scan_id: _Optional[int] = ..., scan_time: _Optional[int] = ..., sync_time: _Optional[int] = ..., frame_timestamp: _Optional[int] = ..., exposure_time: _Optional[int] = ..., store_image: _Optional[bool] = ...) -> None: ...

class JFImageMetadata(_message.Message):
    __slots__ = ("daq_rec",)
    DAQ_REC_FIELD_NUMBER: _ClassVar[int]
    daq_rec: int
    def __init__(self, daq_rec: _Optional[int] = ...) -> None: ...

class EGImageMetadata(_message.Message):
    __slots__ = ("exptime",)
    EXPTIME_FIELD_NUMBER: _ClassVar[int]
    exptime: int
    def __init__(self, exptime: _Optional[int] = ...) -> None: ...

class PcoImageMetadata(_message.Message):
    __slots__ = ("global_timestamp_sec", "global_timestamp_ns", "bsread_name")
    GLOBAL_TIMESTAMP_SEC_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    BSREAD_NAME_FIELD_NUMBER: _ClassVar[int]
    global_timestamp_sec: int
    global_timestamp_ns: int
    bsread_name: str
    def __init__(self, global_timestamp_sec: _Optional[int] = ..., global_timestamp_ns: _Optional[int] = ..., bsread_name: _Optional[str] = ...) -> None: ...

class ImageMetadata(_message.Message):
    __slots__ = ("image_id", "height", "width", "size", "dtype", "status", "compression", "gf", "jf", "eg", "pco")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    GF_FIELD_NUMBER: _ClassVar[int]
    JF_FIELD_NUMBER: _ClassVar[int]
    EG_FIELD_NUMBER: _ClassVar[int]
    PCO_FIELD_NUMBER: _ClassVar[int]
    image_id: int
    height: int
    width: int
    size: int
    dtype: ImageMetadataDtype
    status: ImageMetadataStatus
    compression: ImageMetadataCompression
    gf: GFImageMetadata
    jf: JFImageMetadata
    eg: EGImageMetadata
    pco: PcoImageMetadata
    def __init__(self, image_id: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., size: _Optional[int] = ..., dtype: _Optional[_Union[ImageMetadataDtype, str]] = ..., status: _Optional[_Union[ImageMetadataStatus, str]] = ..., compression: _Optional[_Union[ImageMetadataCompression, str]] = ..., gf: _Optional[_Union[GFImageMetadata, _Mapping]] = ..., jf: _Optional[_Union[JFImageMetadata, _Mapping]] = ..., eg: _Optional[_Union[EGImageMetadata, _Mapping]] = ..., pco: _Optional[_Union[PcoImageMetadata, _Mapping]] = ...) -> None: ...

class CreateFileCommand(_message.Message):
    __slots__ = ("path", "writer_id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    writer_id: int
    def __init__(self, path: _Optional[str] = ..., writer_id: _Optional[int] = ...) -> None: ...

class RecordImage(_message.Message):
    __slots__ = ("image_metadata",)
    IMAGE_METADATA_FIELD_NUMBER: _ClassVar[int]
    image_metadata: ImageMetadata
    def __init__(self, image_metadata: _Optional[_Union[ImageMetadata, _Mapping]] = ...) -> None: ...

class CloseFile(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConfirmLastImageWritten(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WriterAction(_message.Message):
    __slots__ = ("create_file", "record_image", "close_file", "confirm_last_image")
    CREATE_FILE_FIELD_NUMBER: _ClassVar[int]
    RECORD_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FILE_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_LAST_IMAGE_FIELD_NUMBER: _ClassVar[int]
    create_file: CreateFileCommand
    record_image: RecordImage
    close_file: CloseFile
    confirm_last_image: ConfirmLastImageWritten
    def __init__(self, create_file: _Optional[_Union[CreateFileCommand, _Mapping]] = ..., record_image: _Optional[_Union[RecordImage, _Mapping]] = ..., close_file: _Optional[_Union[CloseFile, _Mapping]] = ..., confirm_last_image: _Optional[_Union[ConfirmLastImageWritten, _Mapping]] = ...) -> None: ...

class WriterResponse(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: ResponseCode
    reason: str
    def __init__(self, code: _Optional[_Union[ResponseCode, str]] = ..., reason: _Optional[str] = ...) -> None: ...
