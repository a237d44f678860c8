from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_NONE: _ClassVar[Compression]
    COMPRESSION_BITSHUFFLE_LZ4: _ClassVar[Compression]

class ResponseCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[ResponseCode]
    SUCCESS: _ClassVar[ResponseCode]
    FAILURE: _ClassVar[ResponseCode]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_UNSET: _ClassVar[EventKind]
    READY: _ClassVar[EventKind]
    FILE_CREATED: _ClassVar[EventKind]
    PROGRESS: _ClassVar[EventKind]
    CONFIRMED: _ClassVar[EventKind]
    CLOSED: _ClassVar[EventKind]
    ERROR: _ClassVar[EventKind]
    HEARTBEAT: _ClassVar[EventKind]
COMPRESSION_NONE: Compression
COMPRESSION_BITSHUFFLE_LZ4: Compression
UNKNOWN: ResponseCode
SUCCESS: ResponseCode
FAILURE: ResponseCode
EVENT_UNSET: EventKind
READY: EventKind
FILE_CREATED: EventKind
PROGRESS: EventKind
CONFIRMED: EventKind
CLOSED: EventKind
ERROR: EventKind
HEARTBEAT: EventKind

class CreateFileCommand(_message.Message):
    __slots__ = ("path", "writer_id", "stddaq")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    STDDAQ_FIELD_NUMBER: _ClassVar[int]
    path: str
    writer_id: int
    stddaq: CreateExtras
    def __init__(self, path: _Optional[str] = ..., writer_id: _Optional[int] = ..., stddaq: _Optional[_Union[CreateExtras, _Mapping]] = ...) -> None: ...

class CreateExtras(_message.Message):
    __slots__ = ("acquisition_id", "file", "gid", "compression", "writer_index", "n_writers", "params_json", "config_json")
    ACQUISITION_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    WRITER_INDEX_FIELD_NUMBER: _ClassVar[int]
    N_WRITERS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    acquisition_id: int
    file: str
    gid: int
    compression: Compression
    writer_index: int
    n_writers: int
    params_json: str
    config_json: str
    def __init__(self, acquisition_id: _Optional[int] = ..., file: _Optional[str] = ..., gid: _Optional[int] = ..., compression: _Optional[_Union[Compression, str]] = ..., writer_index: _Optional[int] = ..., n_writers: _Optional[int] = ..., params_json: _Optional[str] = ..., config_json: _Optional[str] = ...) -> None: ...

class RecordImage(_message.Message):
    __slots__ = ("image_metadata", "stddaq")
    IMAGE_METADATA_FIELD_NUMBER: _ClassVar[int]
    STDDAQ_FIELD_NUMBER: _ClassVar[int]
    image_metadata: bytes
    stddaq: RecordExtras
    def __init__(self, image_metadata: _Optional[bytes] = ..., stddaq: _Optional[_Union[RecordExtras, _Mapping]] = ...) -> None: ...

class RecordExtras(_message.Message):
    __slots__ = ("acquisition_id", "index")
    ACQUISITION_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    acquisition_id: int
    index: int
    def __init__(self, acquisition_id: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class RecordImages(_message.Message):
    __slots__ = ("acquisition_id", "first_index", "image_metadata")
    ACQUISITION_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_METADATA_FIELD_NUMBER: _ClassVar[int]
    acquisition_id: int
    first_index: int
    image_metadata: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, acquisition_id: _Optional[int] = ..., first_index: _Optional[int] = ..., image_metadata: _Optional[_Iterable[bytes]] = ...) -> None: ...

class CloseFile(_message.Message):
    __slots__ = ("stddaq",)
    STDDAQ_FIELD_NUMBER: _ClassVar[int]
    stddaq: CloseExtras
    def __init__(self, stddaq: _Optional[_Union[CloseExtras, _Mapping]] = ...) -> None: ...

class CloseExtras(_message.Message):
    __slots__ = ("acquisition_id", "n_images", "reason")
    ACQUISITION_ID_FIELD_NUMBER: _ClassVar[int]
    N_IMAGES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    acquisition_id: int
    n_images: int
    reason: str
    def __init__(self, acquisition_id: _Optional[int] = ..., n_images: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ConfirmLastImageWritten(_message.Message):
    __slots__ = ("stddaq",)
    STDDAQ_FIELD_NUMBER: _ClassVar[int]
    stddaq: ConfirmExtras
    def __init__(self, stddaq: _Optional[_Union[ConfirmExtras, _Mapping]] = ...) -> None: ...

class ConfirmExtras(_message.Message):
    __slots__ = ("acquisition_id", "probe")
    ACQUISITION_ID_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    acquisition_id: int
    probe: bool
    def __init__(self, acquisition_id: _Optional[int] = ..., probe: _Optional[bool] = ...) -> None: ...

class BuildMasterFile(_message.Message):
    __slots__ = ("acquisition_id", "file", "files", "n_images", "images_per_file", "detector", "incomplete_reason")
    ACQUISITION_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    N_IMAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_FILE_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    INCOMPLETE_REASON_FIELD_NUMBER: _ClassVar[int]
    acquisition_id: int
    file: str
    files: _containers.RepeatedScalarFieldContainer[str]
    n_images: int
    images_per_file: _containers.RepeatedScalarFieldContainer[int]
    detector: str
    incomplete_reason: str
    def __init__(self, acquisition_id: _Optional[int] = ..., file: _Optional[str] = ..., files: _Optional[_Iterable[str]] = ..., n_images: _Optional[int] = ..., images_per_file: _Optional[_Iterable[int]] = ..., detector: _Optional[str] = ..., incomplete_reason: _Optional[str] = ...) -> None: ...

class WriterAction(_message.Message):
    __slots__ = ("create_file", "record_image", "close_file", "confirm_last_image", "build_master_file", "record_images")
    CREATE_FILE_FIELD_NUMBER: _ClassVar[int]
    RECORD_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FILE_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_LAST_IMAGE_FIELD_NUMBER: _ClassVar[int]
    BUILD_MASTER_FILE_FIELD_NUMBER: _ClassVar[int]
    RECORD_IMAGES_FIELD_NUMBER: _ClassVar[int]
    create_file: CreateFileCommand
    record_image: RecordImage
    close_file: CloseFile
    confirm_last_image: ConfirmLastImageWritten
    build_master_file: BuildMasterFile
    record_images: RecordImages
    def __init__(self, create_file: _Optional[_Union[CreateFileCommand, _Mapping]] = ..., record_image: _Optional[_Union[RecordImage, _Mapping]] = ..., close_file: _Optional[_Union[CloseFile, _Mapping]] = ..., confirm_last_image: _Optional[_Union[ConfirmLastImageWritten, _Mapping]] = ..., build_master_file: _Optional[_Union[BuildMasterFile, _Mapping]] = ..., record_images: _Optional[_Union[RecordImages, _Mapping]] = ...) -> None: ...

class WriterResponse(_message.Message):
    __slots__ = ("code", "reason", "stddaq")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STDDAQ_FIELD_NUMBER: _ClassVar[int]
    code: ResponseCode
    reason: str
    stddaq: WriterEvent
    def __init__(self, code: _Optional[_Union[ResponseCode, str]] = ..., reason: _Optional[str] = ..., stddaq: _Optional[_Union[WriterEvent, _Mapping]] = ...) -> None: ...

class WriterEvent(_message.Message):
    __slots__ = ("writer", "event", "acquisition_id", "written", "missing", "missing_ids", "bytes", "file", "write_latency_s", "flushed", "batches")
    WRITER_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_ID_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    WRITE_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    FLUSHED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    writer: int
    event: EventKind
    acquisition_id: int
    written: int
    missing: int
    missing_ids: _containers.RepeatedScalarFieldContainer[int]
    bytes: int
    file: str
    write_latency_s: float
    flushed: int
    batches: bool
    def __init__(self, writer: _Optional[int] = ..., event: _Optional[_Union[EventKind, str]] = ..., acquisition_id: _Optional[int] = ..., written: _Optional[int] = ..., missing: _Optional[int] = ..., missing_ids: _Optional[_Iterable[int]] = ..., bytes: _Optional[int] = ..., file: _Optional[str] = ..., write_latency_s: _Optional[float] = ..., flushed: _Optional[int] = ..., batches: _Optional[bool] = ...) -> None: ...
