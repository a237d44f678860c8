"""The writer side of docs/driver-writer-protocol.md: driver commands in, events out.

Commands (ZeroMQ multipart, first part the kind): `create` (JSON), `image` (16 bytes
acq_id u64 LE + index u64 LE, then the ImageMetadata protobuf), `close` (JSON), and
`master` (JSON, to writer 0: build the master file; answered by `closed` or `error`
whose `file` is the master file).
Events: one JSON part `{"writer", "acq_id", "event", "written", "missing", "missing_ids",
"bytes", "file", "reason"}`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from stddaq_writer.h5_layout import COMPRESSIONS, CompressionName

IMAGE_HEADER = struct.Struct("<QQ")
"""acq_id, index: the second part of an `image` command."""

EventKind = Literal["ready", "file_created", "progress", "closed", "error", "heartbeat"]


class ProtocolError(ValueError):
    """A driver message that does not follow the protocol (the reason says how)."""


@dataclass(frozen=True, slots=True)
class CreateCommand:
    """`create`: open a new file for acquisition `acq_id`."""

    acq_id: int
    file: str
    uid: int
    gid: int | None
    compression: CompressionName
    writer_index: int
    n_writers: int
    params: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageCommand:
    """`image`: write image (metadata bytes as published on D-image) at `index`."""

    acq_id: int
    index: int
    metadata: bytes


@dataclass(frozen=True, slots=True)
class CloseCommand:
    """`close`: finish the file of `acq_id`, which holds `n_images` images; `reason` (optional)
    goes into the file's `close_reason`."""

    acq_id: int
    n_images: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MasterCommand:
    """`master` (to writer 0, after every writer closed): build the master file `file`
    over `files` (writer order). `images_per_file` is what the driver dealt."""

    acq_id: int
    file: str
    files: list[str]
    detector: str
    n_images: int | None = None
    images_per_file: list[int] | None = None


Command = CreateCommand | ImageCommand | CloseCommand | MasterCommand


def _json_object(part: bytes, kind: str) -> dict[str, Any]:
    try:
        value = json.loads(part)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"{kind}: body is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{kind}: body must be a JSON object")
    return value


def _int(body: dict[str, Any], key: str, kind: str, *, optional: bool = False) -> Any:
    value = body.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{kind}: {key!r} must be a non-negative integer, got {value!r}")
    return value


def _dict(body: dict[str, Any], key: str, kind: str) -> dict[str, Any]:
    value = body.get(key) or {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{kind}: {key!r} must be a JSON object")
    return value


def parse_create(part: bytes) -> CreateCommand:
    """Parse the JSON body of a `create` command."""
    body = _json_object(part, "create")
    file = body.get("file")
    if not isinstance(file, str) or not file:
        raise ProtocolError(f"create: 'file' must be a path, got {file!r}")
    compression = body.get("compression", "none") or "none"
    if compression not in COMPRESSIONS:
        raise ProtocolError(f"create: 'compression' must be one of {COMPRESSIONS}, got {compression!r}")
    return CreateCommand(
        acq_id=_int(body, "acq_id", "create"),
        file=file,
        uid=_int(body, "uid", "create", optional=True) or 0,
        gid=_int(body, "gid", "create", optional=True),
        compression=compression,
        writer_index=_int(body, "writer_index", "create", optional=True) or 0,
        n_writers=_int(body, "n_writers", "create", optional=True) or 1,
        params=_dict(body, "params", "create"),
        config=_dict(body, "config", "create"),
    )


def parse_command(parts: Sequence[bytes]) -> Command:
    """Parse one multipart driver message; ProtocolError if it is not a valid command."""
    if not parts:
        raise ProtocolError("empty message")
    kind = bytes(parts[0])
    if kind == b"image":
        if len(parts) != 3 or len(parts[1]) != IMAGE_HEADER.size:
            raise ProtocolError("image: expected [b'image', 16-byte acq_id+index, metadata]")
        acq_id, index = IMAGE_HEADER.unpack(parts[1])
        return ImageCommand(acq_id, index, bytes(parts[2]))
    if kind == b"create":
        if len(parts) != 2:
            raise ProtocolError("create: expected [b'create', json]")
        return parse_create(parts[1])
    if kind == b"close":
        if len(parts) != 2:
            raise ProtocolError("close: expected [b'close', json]")
        body = _json_object(parts[1], "close")
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise ProtocolError(f"close: 'reason' must be a string, got {reason!r}")
        return CloseCommand(_int(body, "acq_id", "close"), _int(body, "n_images", "close"), reason)
    if kind == b"master":
        if len(parts) != 2:
            raise ProtocolError("master: expected [b'master', json]")
        return parse_master(parts[1])
    raise ProtocolError(f"unknown message kind {kind[:32]!r}")


def parse_master(part: bytes) -> MasterCommand:
    """Parse the JSON body of a `master` command."""
    body = _json_object(part, "master")
    file, detector, files = body.get("file"), body.get("detector"), body.get("files")
    if not isinstance(file, str) or not file:
        raise ProtocolError(f"master: 'file' must be a path, got {file!r}")
    if not isinstance(detector, str) or not detector:
        raise ProtocolError(f"master: 'detector' must be the detector name, got {detector!r}")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise ProtocolError("master: 'files' must be a non-empty list of paths")
    counts = body.get("images_per_file")
    if counts is not None and (
        not isinstance(counts, list) or not all(isinstance(c, int) for c in counts)
    ):
        raise ProtocolError("master: 'images_per_file' must be a list of integers")
    return MasterCommand(
        acq_id=_int(body, "acq_id", "master"),
        file=file,
        files=files,
        detector=detector,
        n_images=_int(body, "n_images", "master", optional=True),
        images_per_file=counts,
    )


def encode_event(
    writer: int,
    event: EventKind,
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
) -> bytes:
    """One writer event as its JSON part."""
    extra: dict[str, Any] = {} if write_latency_s is None else {"write_latency_s": write_latency_s}
    if flushed is not None:
        extra["flushed"] = flushed
    return json.dumps(
        {
            **extra,
            "writer": writer,
            "acq_id": acq_id,
            "event": event,
            "written": written,
            "missing": missing,
            "missing_ids": missing_ids or [],
            "bytes": bytes_written,
            "file": file,
            "reason": reason,
        }
    ).encode()
