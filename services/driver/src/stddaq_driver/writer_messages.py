"""The driver <-> writer messages of docs/driver-writer-protocol.md: building and parsing.

No sockets here (see writer_link.py): only the bytes and JSON bodies of each message.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

KIND_CREATE = b"create"
KIND_IMAGE = b"image"
KIND_CLOSE = b"close"
KIND_MASTER = b"master"

EVENT_KINDS = frozenset({"ready", "file_created", "progress", "closed", "error", "heartbeat"})

IMAGE_HEADER = struct.Struct("<QQ")
"""acq_id u64 LE, index u64 LE (the image's position in its writer's file)."""

MAX_MISSING_IDS_KEPT = 1000


class EventError(ValueError):
    """A writer event that does not follow the protocol (reason names the field)."""


@dataclass(frozen=True, slots=True)
class WriterEvent:
    """One message of a writer to the driver."""

    writer: int
    event: str
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
    extra: dict[str, Any] = field(default_factory=dict)


def image_header(acq_id: int, index: int) -> bytes:
    """The 16-byte second part of an `image` message."""
    return IMAGE_HEADER.pack(acq_id, index)


def json_part(body: dict[str, Any]) -> bytes:
    """A JSON message part (UTF-8, compact)."""
    return json.dumps(body, separators=(",", ":")).encode()


def _optional_int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EventError(f"field {name!r} must be a non-negative integer, got {value!r}")
    return value


def _optional_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventError(f"field {name!r} must be a string, got {value!r}")
    return value


def parse_event(parts: list[bytes]) -> WriterEvent:
    """Parse a writer event (one JSON part); raise EventError saying what is wrong."""
    if len(parts) != 1:
        raise EventError(f"an event is one JSON part, got {len(parts)} parts")
    try:
        data = json.loads(parts[0])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EventError(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise EventError(f"an event is a JSON object, got {type(data).__name__}")
    writer = _optional_int(data, "writer")
    if writer is None:
        raise EventError("field 'writer' is missing")
    kind = data.get("event")
    if kind not in EVENT_KINDS:
        raise EventError(f"field 'event' must be one of {sorted(EVENT_KINDS)}, got {kind!r}")
    raw_ids = data.get("missing_ids") or []
    if not isinstance(raw_ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in raw_ids
    ):
        raise EventError("field 'missing_ids' must be a list of integers")
    latency = data.get("write_latency_s")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)):
        raise EventError(f"field 'write_latency_s' must be a number, got {latency!r}")
    known = {"writer", "event", "acq_id", "written", "missing", "missing_ids", "bytes", "file",
             "reason", "write_latency_s", "flushed"}
    return WriterEvent(
        writer=writer,
        event=kind,
        acq_id=_optional_int(data, "acq_id"),
        written=_optional_int(data, "written"),
        missing=_optional_int(data, "missing"),
        missing_ids=tuple(raw_ids),
        bytes_written=_optional_int(data, "bytes"),
        file=_optional_str(data, "file"),
        reason=_optional_str(data, "reason"),
        write_latency_s=None if latency is None else float(latency),
        flushed=_optional_int(data, "flushed"),
        extra={key: value for key, value in data.items() if key not in known},
    )
