"""Parsing writer events: good ones, and bad ones refused with the field named."""

from __future__ import annotations

import json

import pytest

from stddaq_driver.writer_messages import EventError, image_header, json_part, parse_event


def test_a_full_event() -> None:
    event = parse_event([json.dumps({
        "writer": 2, "acq_id": 5, "event": "progress", "written": 10, "missing": 1,
        "missing_ids": [33], "bytes": 1000, "file": "/d/f2.h5", "reason": "",
        "write_latency_s": 0.002, "extra_field": 1,
    }).encode()])
    assert (event.writer, event.acq_id, event.event, event.written) == (2, 5, "progress", 10)
    assert event.missing_ids == (33,)
    assert event.bytes_written == 1000
    assert event.write_latency_s == 0.002
    assert event.extra == {"extra_field": 1}


def test_a_heartbeat_without_acquisition() -> None:
    event = parse_event([b'{"writer": 0, "event": "heartbeat", "acq_id": null}'])
    assert event.acq_id is None and event.event == "heartbeat"


@pytest.mark.parametrize(
    ("parts", "words"),
    [
        ([b"{"], "not JSON"),
        ([b"[1]"], "JSON object"),
        ([b'{"event": "progress"}'], "'writer' is missing"),
        ([b'{"writer": -1, "event": "progress"}'], "'writer'"),
        ([b'{"writer": 0, "event": "exploded"}'], "'event'"),
        ([b'{"writer": 0, "event": "progress", "written": "5"}'], "'written'"),
        ([b'{"writer": 0, "event": "progress", "missing_ids": [true]}'], "'missing_ids'"),
        ([b'{"writer": 0, "event": "progress"}', b"x"], "2 parts"),
    ],
)
def test_bad_events_are_named(parts: list[bytes], words: str) -> None:
    with pytest.raises(EventError, match=words):
        parse_event(parts)


def test_image_header_and_json_part() -> None:
    assert image_header(1, 2) == (1).to_bytes(8, "little") + (2).to_bytes(8, "little")
    assert json.loads(json_part({"a": 1})) == {"a": 1}
