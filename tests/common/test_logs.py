"""setup_logging: the text format and the JSON-lines format for Filebeat."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from stddaq_common.runtime.logs import log_level, setup_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_the_filebeat_fields() -> None:
    stream = io.StringIO()
    setup_logging("receiver", "info", "json", detector="gf1", stream=stream)
    logging.getLogger("stddaq.receiver").info(
        "frame %d dropped", 17, extra={"image_id": 17, "reason": "slot overwritten"}
    )
    [entry] = json_lines(stream)
    assert entry["message"] == "frame 17 dropped"
    assert entry["log.level"] == "info"
    assert entry["log.logger"] == "stddaq.receiver"
    assert entry["service"] == "receiver"
    assert entry["detector"] == "gf1"
    assert entry["image_id"] == 17 and entry["reason"] == "slot overwritten"
    stamp = str(entry["@timestamp"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).utcoffset() is not None


def test_json_exception_is_one_line_with_error_fields() -> None:
    stream = io.StringIO()
    setup_logging("writer", "info", "json", detector="gf1", stream=stream)
    try:
        raise OSError("disk full\nreally")
    except OSError:
        logging.getLogger("stddaq.writer").exception("cannot write")
    assert len(stream.getvalue().splitlines()) == 1
    [entry] = json_lines(stream)
    assert entry["log.level"] == "error"
    assert entry["error.type"] == "OSError"
    assert entry["error.message"] == "disk full\nreally"
    assert "Traceback" in str(entry["error.stack_trace"])


def test_json_handles_odd_extras_and_reserved_names() -> None:
    stream = io.StringIO()
    setup_logging("writer", "info", "json", stream=stream)
    logging.getLogger("x").warning(
        "odd", extra={"ratio": float("nan"), "service": "spoofed", "path": object()}
    )
    [entry] = json_lines(stream)
    assert entry["service"] == "writer" and entry["extra.service"] == "spoofed"
    assert entry["ratio"] == "nan" and entry["detector"] is None


def test_text_format_line() -> None:
    stream = io.StringIO()
    setup_logging("receiver", "debug", "text", detector="gf1", stream=stream)
    logging.getLogger("stddaq.receiver").debug(
        "connected", extra={"address": "tcp://cam:9000", "details": {"n": 1}}
    )
    line = stream.getvalue().rstrip("\n")
    assert re.fullmatch(
        r"\S+Z DEBUG   receiver\[gf1\] stddaq\.receiver: connected address=tcp://cam:9000", line
    ), line


@pytest.mark.parametrize(
    ("level", "shown"),
    [("trace", 4), ("debug", 4), ("info", 3), ("warn", 2), ("err", 1), ("off", 0)],
)
def test_std_daq_level_names_filter(level: str, shown: int) -> None:
    stream = io.StringIO()
    setup_logging("receiver", level, "text", stream=stream)
    log = logging.getLogger("stddaq.level")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert len(stream.getvalue().splitlines()) == shown


def test_second_setup_replaces_the_first_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("receiver", "info", "text", stream=first)
    setup_logging("receiver", "info", "json", stream=second)
    logging.getLogger("stddaq.x").info("once")
    assert first.getvalue() == ""
    assert [entry["message"] for entry in json_lines(second)] == ["once"]


def test_bad_level_and_format_are_refused() -> None:
    with pytest.raises(ValueError, match="log level 'loud' is not one of"):
        log_level("loud")
    with pytest.raises(ValueError, match="log format 'xml'"):
        setup_logging("receiver", "info", "xml")  # type: ignore[arg-type]
