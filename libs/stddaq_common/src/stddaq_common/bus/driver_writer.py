"""The driver <-> writer contract: socket names, messages, encoding and parsing both ways.

std_daq's own wire protocol (docs/interfaces.md section 3, docs/driver-writer-protocol.md):
per writer k the driver binds PUSH `ipc://<ipc_dir>/<D>-driver-<k>` (the writer connects
PULL) and writer k binds PUSH `ipc://<ipc_dir>/<D>-writer-<k>` for its answers (the driver
connects PULL). Every message is one ZeroMQ part: a protobuf `WriterAction` from the
driver, a protobuf `WriterResponse` from a writer. stddaq's additions (acquisition id,
position in the file, compression, progress, heartbeats, the master file, ...) travel in
fields numbered from 1000 up (protos/stddaq_driver_writer.proto), which a std_daq peer
skips; a message from a std_daq peer has none of them (`stddaq` is False / None below).

This is the only module that knows these names and bytes; no sockets here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from google.protobuf.message import DecodeError

from stddaq_common._proto import stddaq_driver_writer_pb2 as pb
from stddaq_common.names import ipc_address
from stddaq_common.wire.compression import FILE_COMPRESSIONS, CompressionName

__all__ = [
    "FILE_COMPRESSIONS",
    "CloseCommand",
    "Command",
    "CompressionName",
    "ConfirmCommand",
    "CreateCommand",
    "EventKind",
    "ImageBatchCommand",
    "ImageCommand",
    "MasterCommand",
    "ProtocolError",
    "Response",
    "WriterEvent",
    "driver_address",
    "encode_command",
    "encode_event",
    "encode_image",
    "encode_image_batch",
    "encode_plain_response",
    "parse_command",
    "parse_record_image",
    "parse_record_images",
    "parse_response",
    "writer_address",
]


def driver_address(detector: str, index: int, ipc_dir: str) -> str:
    """`ipc://<ipc_dir>/<D>-driver-<k>`: the driver's PUSH to writer k (bound by the driver)."""
    return ipc_address(detector, f"driver-{index}", ipc_dir)


def writer_address(detector: str, index: int, ipc_dir: str) -> str:
    """`ipc://<ipc_dir>/<D>-writer-<k>`: writer k's PUSH of answers (bound by the writer)."""
    return ipc_address(detector, f"writer-{index}", ipc_dir)


class ProtocolError(ValueError):
    """A message that does not follow the protocol (the text says what is wrong)."""


# ----------------------------------------------------------------- driver -> writer


@dataclass(frozen=True, slots=True)
class CreateCommand:
    """CreateFileCommand. std_daq's fields: `path` and `uid` (writer_id); the rest is
    stddaq's and None/default when a std_daq driver sent it (`acq_id is None`)."""

    path: str
    uid: int
    acq_id: int | None = None
    file: str | None = None
    """The exact file (stddaq); from a std_daq driver the writer names it from `path`."""
    gid: int | None = None
    compression: CompressionName = "none"
    writer_index: int = 0
    n_writers: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def stddaq(self) -> bool:
        """True if a stddaq driver sent it (it carries the additions)."""
        return self.acq_id is not None


@dataclass(frozen=True, slots=True)
class ImageCommand:
    """RecordImage: the ImageMetadata bytes as published on D-image; stddaq adds the
    acquisition and the image's position `index` in this writer's file."""

    metadata: bytes
    acq_id: int | None = None
    index: int | None = None


@dataclass(frozen=True, slots=True)
class ImageBatchCommand:
    """stddaq only (to a writer that announced `batches`): images dealt in a row to one
    writer, at positions `first_index`, `first_index + 1`, ... of its file."""

    metadata: tuple[bytes, ...]
    acq_id: int
    first_index: int

    def images(self) -> list[ImageCommand]:
        """The RecordImage each entry stands for, in order."""
        acq_id, first = self.acq_id, self.first_index
        return [ImageCommand(meta, acq_id, first + k) for k, meta in enumerate(self.metadata)]


@dataclass(frozen=True, slots=True)
class ConfirmCommand:
    """ConfirmLastImageWritten (answer once every image sent before it is written).
    stddaq also uses it as a liveness probe outside acquisitions (`probe`)."""

    acq_id: int | None = None
    probe: bool = False


@dataclass(frozen=True, slots=True)
class CloseCommand:
    """CloseFile; stddaq adds the acquisition, the images dealt and a close reason."""

    acq_id: int | None = None
    n_images: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MasterCommand:
    """stddaq only (to a stddaq writer): build the master file `file` over `files`."""

    acq_id: int
    file: str
    files: list[str]
    detector: str
    n_images: int | None = None
    images_per_file: list[int] | None = None
    incomplete_reason: str = ""
    """Non-empty: the acquisition failed (a writer was lost); build the master file over
    what the files hold, marked incomplete, skipping files that cannot be read."""


Command = (
    CreateCommand | ImageCommand | ImageBatchCommand | ConfirmCommand | CloseCommand | MasterCommand
)

_COMPRESSION_CODES: Final[dict[str, int]] = {
    "none": pb.COMPRESSION_NONE,
    "bitshuffle_lz4": pb.COMPRESSION_BITSHUFFLE_LZ4,
}
_COMPRESSION_NAMES: Final[dict[int, CompressionName]] = {
    pb.COMPRESSION_NONE: "none",
    pb.COMPRESSION_BITSHUFFLE_LZ4: "bitshuffle_lz4",
}


_ONE_BYTE_VARINTS: Final = tuple(bytes((value,)) for value in range(0x80))


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE_VARINTS[value]  # the rule for lengths of metadata (hot path)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(tag: bytes, body: bytes) -> bytes:
    return tag + _varint(len(body)) + body


_TAG_FIELD_1: Final = b"\x0a"  # field 1, wire type 2
_TAG_FIELD_2: Final = b"\x12"  # field 2, wire type 2
_TAG_FIELD_3: Final = b"\x1a"  # field 3, wire type 2
_TAG_EXTRAS: Final = _varint(1000 << 3 | 2)  # field 1000, wire type 2
_TAG_RECORD_IMAGES: Final = _varint(1001 << 3 | 2)  # WriterAction.record_images


def encode_image(metadata: bytes, acq_id: int | None = None, index: int | None = None) -> bytes:
    """WriterAction{record_image} around ImageMetadata bytes, without re-encoding them.

    Built by hand (the hot path: one per image); the same bytes the generated code makes
    (checked by tests/driver/test_driver_writer_contract.py).
    """
    record = _TAG_FIELD_1 + _varint(len(metadata)) + metadata if metadata else b""
    if acq_id is not None:
        extras = b""
        if acq_id:
            extras = b"\x08" + _varint(acq_id)
        if index:
            extras += b"\x10" + _varint(index)
        record += _TAG_EXTRAS + _varint(len(extras)) + extras
    return _TAG_FIELD_2 + _varint(len(record)) + record


def encode_image_batch(metadata: list[bytes], acq_id: int, first_index: int) -> bytes:
    """WriterAction{record_images}: images dealt in a row to one writer (stddaq only, to a
    writer that announced `batches`). Built by hand like encode_image; each entry is the
    ImageMetadata bytes unchanged."""
    parts = [b"\x08", _varint(acq_id), b"\x10", _varint(first_index)]
    for meta in metadata:
        parts.append(_TAG_FIELD_3)
        parts.append(_varint(len(meta)))
        parts.append(meta)
    return _length_delimited(_TAG_RECORD_IMAGES, b"".join(parts))


def encode_command(command: Command) -> bytes:
    """One WriterAction (a stddaq command carries its additions; see the dataclasses)."""
    if isinstance(command, ImageCommand):
        return encode_image(command.metadata, command.acq_id, command.index)
    if isinstance(command, ImageBatchCommand):
        return encode_image_batch(list(command.metadata), command.acq_id, command.first_index)
    action = pb.WriterAction()
    if isinstance(command, CreateCommand):
        create = action.create_file
        create.path = command.path
        create.writer_id = command.uid
        if command.acq_id is not None:
            extras = create.stddaq
            extras.acquisition_id = command.acq_id
            extras.file = command.file or ""
            if command.gid is not None:
                extras.gid = command.gid
            extras.compression = _COMPRESSION_CODES[command.compression]  # type: ignore[assignment]
            extras.writer_index = command.writer_index
            extras.n_writers = command.n_writers
            extras.params_json = json.dumps(command.params) if command.params else ""
            extras.config_json = json.dumps(command.config) if command.config else ""
    elif isinstance(command, ConfirmCommand):
        confirm = action.confirm_last_image
        confirm.SetInParent()
        if command.acq_id is not None or command.probe:
            confirm.stddaq.SetInParent()
            confirm.stddaq.acquisition_id = command.acq_id or 0
            confirm.stddaq.probe = command.probe
    elif isinstance(command, CloseCommand):
        close = action.close_file
        close.SetInParent()
        if command.acq_id is not None:
            close.stddaq.SetInParent()
            close.stddaq.acquisition_id = command.acq_id
            close.stddaq.n_images = command.n_images or 0
            close.stddaq.reason = command.reason
    else:
        master = action.build_master_file
        master.SetInParent()
        master.acquisition_id = command.acq_id
        master.file = command.file
        master.files.extend(command.files)
        master.n_images = command.n_images or 0
        master.images_per_file.extend(command.images_per_file or [])
        master.detector = command.detector
        master.incomplete_reason = command.incomplete_reason
    return action.SerializeToString()


def _json_object(text: str, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProtocolError(f"create: {what} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"create: {what} must be a JSON object")
    return value


def _parse_create(create: pb.CreateFileCommand) -> CreateCommand:
    if not create.HasField("stddaq"):
        if not create.path:
            raise ProtocolError("create: 'path' is empty")
        return CreateCommand(path=create.path, uid=max(create.writer_id, 0))
    extras = create.stddaq
    if not extras.file:
        raise ProtocolError("create: the file path is empty")
    compression = _COMPRESSION_NAMES.get(extras.compression)
    if compression is None:
        raise ProtocolError(
            f"create: compression must be one of {FILE_COMPRESSIONS}, got code {extras.compression}"
        )
    if create.writer_id < 0:
        raise ProtocolError(f"create: writer_id (uid) must not be negative, got {create.writer_id}")
    return CreateCommand(
        path=create.path,
        uid=create.writer_id,
        acq_id=extras.acquisition_id,
        file=extras.file,
        gid=extras.gid if extras.HasField("gid") else None,
        compression=compression,
        writer_index=extras.writer_index,
        n_writers=extras.n_writers or 1,
        params=_json_object(extras.params_json, "params"),
        config=_json_object(extras.config_json, "config"),
    )


def parse_command(data: bytes) -> Command:
    """Parse one WriterAction; ProtocolError if it is not a valid command."""
    try:
        action = pb.WriterAction.FromString(data)
    except DecodeError as error:
        raise ProtocolError(f"not a WriterAction: {error}") from None
    kind = action.WhichOneof("action")
    if kind == "record_image":
        record = action.record_image
        if not record.image_metadata:
            raise ProtocolError("record_image without image_metadata")
        if record.HasField("stddaq"):
            return ImageCommand(
                record.image_metadata, record.stddaq.acquisition_id, record.stddaq.index
            )
        return ImageCommand(record.image_metadata)
    if kind == "record_images":
        batch = action.record_images
        if not batch.image_metadata:
            raise ProtocolError("record_images without image_metadata")
        if not all(batch.image_metadata):
            raise ProtocolError("record_images with an empty image_metadata entry")
        return ImageBatchCommand(
            tuple(batch.image_metadata), batch.acquisition_id, batch.first_index
        )
    if kind == "create_file":
        return _parse_create(action.create_file)
    if kind == "confirm_last_image":
        confirm = action.confirm_last_image
        if not confirm.HasField("stddaq"):
            return ConfirmCommand()
        if confirm.stddaq.probe:
            return ConfirmCommand(probe=True)
        return ConfirmCommand(confirm.stddaq.acquisition_id)
    if kind == "close_file":
        close = action.close_file
        if not close.HasField("stddaq"):
            return CloseCommand()
        extras = close.stddaq
        return CloseCommand(extras.acquisition_id, extras.n_images, extras.reason)
    if kind == "build_master_file":
        master = action.build_master_file
        if not master.file:
            raise ProtocolError("master: 'file' is empty")
        if not master.detector:
            raise ProtocolError("master: 'detector' is empty")
        if not master.files:
            raise ProtocolError("master: 'files' is empty")
        return MasterCommand(
            acq_id=master.acquisition_id,
            file=master.file,
            files=list(master.files),
            detector=master.detector,
            n_images=master.n_images,
            images_per_file=list(master.images_per_file) or None,
            incomplete_reason=master.incomplete_reason,
        )
    raise ProtocolError("a WriterAction without an action this writer knows")


_EXTRAS_TAG_BYTES: Final = bytes(_TAG_EXTRAS)


def parse_record_image(data: bytes) -> tuple[bytes, int | None, int | None] | None:
    """A short RecordImage read straight from its bytes (the hot path: one per image):
    `(metadata, acq_id, index)`, as parse_command's ImageCommand has them (acq_id and
    index None from a std_daq driver).

    Only the layout `encode_image` makes (and std_daq's driver) is read here: one-byte
    lengths (a message under 128 bytes), the metadata first, then stddaq's additions with
    the acquisition and the index each at most once, in that order. Anything else (any
    other command, a longer message, another field order, unknown or repeated fields, bad
    bytes) returns None and parse_command decides; where this returns a result it is
    what parse_command returns.
    """
    end = len(data)
    if end < 5 or data[0] != 0x12 or data[1] != end - 2 or data[2] != 0x0A:
        return None
    size = data[3]
    stop = 4 + size
    if not size or size >= 0x80 or stop > end:
        return None
    if stop == end:
        return data[4:stop], None, None
    if data[stop : stop + 2] != _EXTRAS_TAG_BYTES or data[stop + 2] != end - stop - 3:
        return None
    pos = stop + 3
    acq_id = index = 0
    for tag in (0x08, 0x10):
        if pos < end and data[pos] == tag:
            pos += 1
            value = shift = 0
            while True:
                if pos >= end or shift > 63:
                    return None
                byte = data[pos]
                pos += 1
                value |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
            if value >> 64:
                return None
            if tag == 0x08:
                acq_id = value
            else:
                index = value
    if pos != end:
        return None
    return data[4:stop], acq_id, index


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` of `data` and the position after it; (-1, -1) if there is none
    (cut short, or longer than 64 bits)."""
    value = shift = 0
    end = len(data)
    while pos < end and shift <= 63:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value, pos) if not value >> 64 else (-1, -1)
        shift += 7
    return -1, -1


def parse_record_images(data: bytes) -> tuple[list[bytes], int, int] | None:
    """A RecordImages read straight from its bytes (the hot path: one per batch of images
    for a writer): `(metadata entries, acq_id, first_index)`, as parse_command's
    ImageBatchCommand has them.

    Only the layout `encode_image_batch` makes is read here: the acquisition and the
    first index each at most once and in that order, then one or more non-empty entries.
    Anything else (any other command, another field order, unknown or repeated fields,
    bad bytes) returns None and parse_command decides; where this returns a result it is
    what parse_command returns.
    """
    tag = _TAG_RECORD_IMAGES
    if data[:2] != tag:
        return None
    length, pos = _varint_at(data, 2)
    end = len(data)
    if pos < 0 or pos + length != end or pos == end:
        return None
    acq_id = first = 0
    if data[pos] == 0x08:
        acq_id, pos = _varint_at(data, pos + 1)
        if pos < 0 or pos == end:
            return None
    if data[pos] == 0x10:
        first, pos = _varint_at(data, pos + 1)
        if pos < 0:
            return None
    entries: list[bytes] = []
    while pos < end:
        if data[pos] != 0x1A:
            return None
        size = data[pos + 1] if pos + 1 < end else 0
        if size < 0x80:
            pos += 2
        else:
            size, pos = _varint_at(data, pos + 1)
        stop = pos + size
        if size <= 0 or stop > end:
            return None
        entries.append(data[pos:stop])
        pos = stop
    if not entries:
        return None
    return entries, acq_id, first


# ----------------------------------------------------------------- writer -> driver


class EventKind(StrEnum):
    """What a stddaq writer's answer or unsolicited message says."""

    READY = "ready"
    FILE_CREATED = "file_created"
    PROGRESS = "progress"
    CONFIRMED = "confirmed"
    CLOSED = "closed"
    ERROR = "error"
    HEARTBEAT = "heartbeat"


_EVENT_CODES: Final[dict[EventKind, int]] = {
    EventKind.READY: pb.READY,
    EventKind.FILE_CREATED: pb.FILE_CREATED,
    EventKind.PROGRESS: pb.PROGRESS,
    EventKind.CONFIRMED: pb.CONFIRMED,
    EventKind.CLOSED: pb.CLOSED,
    EventKind.ERROR: pb.ERROR,
    EventKind.HEARTBEAT: pb.HEARTBEAT,
}
_EVENT_KINDS: Final[dict[int, EventKind]] = {code: kind for kind, code in _EVENT_CODES.items()}


@dataclass(frozen=True, slots=True)
class WriterEvent:
    """What a writer said: a stddaq writer's event, or what the driver made of a std_daq
    writer's plain answer (then only `event` and `reason` come from the writer)."""

    writer: int
    event: EventKind
    acq_id: int | None = None
    written: int | None = None
    missing: int | None = None
    missing_ids: tuple[int, ...] = ()
    bytes_written: int | None = None
    file: str | None = None
    reason: str | None = None
    write_latency_s: float | None = None
    flushed: int | None = None
    """Images written as of the writer's last flush (what its file holds even after a crash)."""
    stddaq: bool = True
    """False: a std_daq writer's plain WriterResponse (figures are the driver's own)."""
    batches: bool = False
    """The writer takes RecordImages (ImageBatchCommand); only stddaq writers say so."""


@dataclass(frozen=True, slots=True)
class Response:
    """One WriterResponse: std_daq's code and reason, and stddaq's event if present."""

    ok: bool
    reason: str
    event: WriterEvent | None


def encode_plain_response(ok: bool, reason: str = "") -> bytes:
    """A WriterResponse with std_daq's fields only (SUCCESS / FAILURE and a reason)."""
    response = pb.WriterResponse(code=pb.SUCCESS if ok else pb.FAILURE, reason=reason)
    return response.SerializeToString()


def encode_event(
    writer: int,
    event: EventKind | str,
    *,
    acq_id: int | None = None,
    written: int = 0,
    missing: int = 0,
    missing_ids: list[int] | None = None,
    bytes_written: int = 0,
    file: str = "",
    reason: str = "",
    write_latency_s: float | None = None,
    flushed: int | None = None,
    batches: bool = False,
) -> bytes:
    """A stddaq writer's WriterResponse: code FAILURE for `error`, else SUCCESS, the reason,
    and the event in the additions (`batches`: the writer takes RecordImages)."""
    kind = EventKind(event)
    response = pb.WriterResponse(
        code=pb.FAILURE if kind is EventKind.ERROR else pb.SUCCESS, reason=reason
    )
    extras = response.stddaq
    extras.writer = writer
    extras.event = _EVENT_CODES[kind]  # type: ignore[assignment]
    if acq_id is not None:
        extras.acquisition_id = acq_id
    extras.written = written
    extras.missing = missing
    extras.missing_ids.extend(missing_ids or [])
    extras.bytes = bytes_written
    extras.file = file
    if write_latency_s is not None:
        extras.write_latency_s = write_latency_s
    if flushed is not None:
        extras.flushed = flushed
    extras.batches = batches
    return response.SerializeToString()


def parse_response(data: bytes) -> Response:
    """Parse one WriterResponse; ProtocolError if it is not one."""
    try:
        response = pb.WriterResponse.FromString(data)
    except DecodeError as error:
        raise ProtocolError(f"not a WriterResponse: {error}") from None
    if response.code not in (pb.SUCCESS, pb.FAILURE):
        raise ProtocolError(f"response code must be SUCCESS or FAILURE, got {response.code}")
    ok = response.code == pb.SUCCESS
    if not response.HasField("stddaq"):
        return Response(ok, response.reason, None)
    extras = response.stddaq
    kind = _EVENT_KINDS.get(extras.event)
    if kind is None:
        raise ProtocolError(f"unknown event code {extras.event}")
    if ok == (kind is EventKind.ERROR):
        raise ProtocolError(f"code {response.code} does not go with event {kind.value!r}")
    event = WriterEvent(
        writer=extras.writer,
        event=kind,
        acq_id=extras.acquisition_id if extras.HasField("acquisition_id") else None,
        written=extras.written,
        missing=extras.missing,
        missing_ids=tuple(extras.missing_ids),
        bytes_written=extras.bytes,
        file=extras.file or None,
        reason=response.reason or None,
        write_latency_s=extras.write_latency_s if extras.HasField("write_latency_s") else None,
        flushed=extras.flushed if extras.HasField("flushed") else None,
        batches=extras.batches,
    )
    return Response(ok, response.reason, event)
