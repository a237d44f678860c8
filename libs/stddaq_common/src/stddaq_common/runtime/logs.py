"""Logging setup shared by every service: a text format for people, JSON lines for Filebeat.

Logs go to stderr (stdout carries only the runner's readiness line). The JSON format
writes one object per line with `@timestamp` (ISO 8601, UTC, milliseconds), `log.level`,
`log.logger`, `service`, `detector`, `message`, the fields passed with `extra={...}`, and
`error.type` / `error.message` / `error.stack_trace` when an exception is logged. The text
format appends scalar extras as ` key=value`; structured extras (dicts, lists) appear only
in JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]

# std_daq's level names (spdlog's) and Python's, to logging levels.
_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "err": logging.ERROR,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}

# Attributes every LogRecord has; anything else on a record came in through `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}

_JSON_RESERVED = frozenset({"@timestamp", "log.level", "log.logger", "service", "detector", "message"})


def log_level(name: str) -> int:
    """The logging level for a std_daq level name (`info`, `warn`, `err`, `off`, ...)."""
    try:
        return _LEVELS[name.lower()]
    except KeyError:
        raise ValueError(f"log level {name!r} is not one of {', '.join(_LEVELS)}") from None


def iso_timestamp(created: float) -> str:
    """`2024-05-01T12:00:00.123Z` for a `time.time()` value."""
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with `extra={...}`."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record, on one line (Filebeat's `ndjson` input)."""

    def __init__(self, service: str, detector: str | None) -> None:
        super().__init__()
        self.service = service
        self.detector = detector

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "@timestamp": iso_timestamp(record.created),
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "service": self.service,
            "detector": self.detector,
            "message": record.getMessage(),
        }
        for key, value in record_extras(record).items():
            entry[f"extra.{key}" if key in _JSON_RESERVED else key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error.type"] = record.exc_info[0].__name__
            entry["error.message"] = str(record.exc_info[1])
            entry["error.stack_trace"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["error.stack_trace"] = self.formatStack(record.stack_info)
        try:
            return json.dumps(entry, default=str, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):  # NaN, a cycle, odd keys: fall back to text values
            plain = {
                key: value if isinstance(value, str | None) else repr(value) for key, value in entry.items()
            }
            return json.dumps(plain, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <service>[<detector>] <logger>: <message> key=value ...`."""

    def __init__(self, service: str, detector: str | None) -> None:
        super().__init__()
        self.origin = f"{service}[{detector}]" if detector else service

    def format(self, record: logging.LogRecord) -> str:
        """The record as one human-readable line (plus a traceback, if any)."""
        text = (
            f"{iso_timestamp(record.created)} {record.levelname:<7} {self.origin} "
            f"{record.name}: {record.getMessage()}"
        )
        extras = [
            f" {key}={value}"
            for key, value in record_extras(record).items()
            if not isinstance(value, dict | list | tuple | set)
        ]
        text += "".join(extras)
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


class _StddaqHandler(logging.StreamHandler[TextIO]):
    """The handler setup_logging installs (recognised and replaced on a second call)."""


def setup_logging(
    service: str,
    level: str = "info",
    fmt: LogFormat = "text",
    *,
    detector: str | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send all logging to `stream` (stderr) in `fmt`; return the installed handler.

    Calling it again replaces the handler it installed before; other handlers stay.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r} is not 'text' or 'json'")
    formatter: logging.Formatter = (
        JsonLinesFormatter(service, detector) if fmt == "json" else TextFormatter(service, detector)
    )
    handler = _StddaqHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StddaqHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(log_level(level))
    return handler
