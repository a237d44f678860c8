"""Stats: counters, gauges, rates per period and InfluxDB 1.x line protocol."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stddaq_common.runtime.counters import Counter, Gauge
from stddaq_common.runtime.line_protocol import (
    escape_key,
    escape_measurement,
    format_field_value,
    format_line,
)
from stddaq_common.runtime.stats import STATS_LOGGER, Stats

T0 = 1000.0  # a monotonic time the tests choose, so rates are exact


# --- counters and gauges ---


def test_counter_inc_is_a_plain_int_add() -> None:
    counter = Counter("frames")
    counter.inc()
    counter.inc(41)
    counter.value += 8
    assert counter.value == 50
    assert type(counter.value) is int


def test_gauge_keeps_the_kind_of_its_initial_value() -> None:
    assert Gauge("temperature").kind is float
    queue = Gauge("queue_depth", initial=0)
    queue.set(7)
    assert queue.value == 7 and type(queue.value) is int
    state = Gauge("state", initial="idle")
    state.set("recording")
    assert state.value == "recording"
    flag = Gauge("connected", initial=False)
    flag.set(True)
    assert flag.value is True
    temperature = Gauge("temperature")
    temperature.set(3)
    assert temperature.value == 3.0 and type(temperature.value) is float


def test_gauge_refuses_a_value_of_another_kind_naming_the_gauge() -> None:
    gauge = Gauge("queue_depth", initial=0)
    with pytest.raises(ValueError, match="gauge queue_depth: cannot store 'many'"):
        gauge.set("many")


@pytest.mark.parametrize("name", ["Frames", "9lives", "frames rate", "", "n-frames"])
def test_bad_metric_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        Counter(name)


def test_registration_returns_the_same_counter_and_refuses_clashes() -> None:
    stats = Stats("receiver", "gf1", period=10)
    frames = stats.counter("frames", "frames received")
    assert stats.counter("frames") is frames
    with pytest.raises(ValueError, match="'frames_rate' is already used"):
        stats.gauge("frames_rate")
    with pytest.raises(ValueError, match="'frames' is already used"):
        stats.gauge("frames")
    with pytest.raises(ValueError, match="leave out '_total'"):
        stats.counter("bytes_total")
    stats.gauge("depth_rate")
    with pytest.raises(ValueError, match="'depth_rate' is already used"):
        stats.counter("depth")


def test_bad_construction_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="period must be > 0"):
        Stats("receiver", "gf1", period=0)
    with pytest.raises(ValueError, match="must not be 'detector'"):
        Stats("receiver", "gf1", period=1, tags={"detector": "x"})
    with pytest.raises(ValueError, match="must not contain a line break"):
        Stats("receiver", "gf1", period=1, tags={"stream": "a\nb"})
    with pytest.raises(ValueError, match="influxdb_url 'ftp://x/write' is not an http"):
        Stats("receiver", "gf1", period=1, influx_url="ftp://x/write")


# --- rates and emission ---


def test_rates_are_delta_over_elapsed_per_period() -> None:
    stats = Stats("receiver", "gf1", period=10)
    frames = stats.counter("frames")
    missed = stats.counter("missed_packets")
    stats.emit_now(now=T0)  # sets the baseline
    frames.inc(250)
    missed.inc(5)
    stats.emit_now(now=T0 + 10)
    assert stats.rates == {"frames": 25.0, "missed_packets": 0.5}
    frames.inc(100)
    stats.emit_now(now=T0 + 30)
    assert stats.rates == {"frames": 5.0, "missed_packets": 0.0}


def test_maybe_emit_emits_at_most_once_per_period() -> None:
    stats = Stats("receiver", "gf1", period=10)
    stats.counter("frames")
    stats.emit_now(now=T0)
    assert stats.maybe_emit(now=T0 + 9.99) is None
    assert stats.maybe_emit(now=T0 + 10) is not None
    assert stats.maybe_emit(now=T0 + 15) is None
    assert stats.maybe_emit(now=T0 + 20.5) is not None
    assert stats.maybe_emit(now=T0 + 30) is None


def test_emitted_line_is_logged_on_the_stats_logger(caplog: pytest.LogCaptureFixture) -> None:
    stats = Stats("receiver", "gf1", period=10)
    frames = stats.counter("frames")
    stats.emit_now(now=T0)
    frames.inc(30)
    with caplog.at_level(logging.INFO, logger=STATS_LOGGER):
        line = stats.maybe_emit(now=T0 + 10)
    assert line is not None
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        (STATS_LOGGER, logging.INFO, line)
    ]
    assert re.fullmatch(r"receiver,detector=gf1 frames=30i,frames_rate=3\.0 \d{19}", line)
    assert vars(caplog.records[0])["stats"] == {"frames": 30, "frames_rate": 3.0}  # JSON logs


def test_line_protocol_has_counters_rates_and_gauges_in_order() -> None:
    stats = Stats("writer", "gf1", period=10, tags={"writer": "0"})
    stats.counter("n_written_images").inc(12)
    stats.gauge("queue_depth", initial=0).set(3)
    stats.gauge("avg_throughput").set(12.5)
    stats.gauge("file", initial="").set('/data/"run 1".h5')
    stats.gauge("recording", initial=False).set(True)
    line = stats.line_protocol(now_ns=1_700_000_000_000_000_000)
    assert line == (
        "writer,detector=gf1,writer=0 n_written_images=12i,n_written_images_rate=0.0,"
        'queue_depth=3i,avg_throughput=12.5,file="/data/\\"run 1\\".h5",recording=true '
        "1700000000000000000"
    )


def test_no_fields_means_no_line() -> None:
    stats = Stats("writer", "gf1", period=10)
    assert stats.line_protocol(now_ns=1) is None
    assert stats.emit_now() is None
    stats.gauge("temperature").set(float("nan"))
    assert stats.line_protocol(now_ns=1) is None


# --- line protocol escaping ---


def test_escaping_of_measurement_tags_and_fields() -> None:
    line = format_line(
        "my service,v2",
        {"detector": "a,b=c d", "empty": ""},
        [("field one", 1), ("ratio", 0.25), ("text", 'say "hi"\\now\nnext')],
        42,
    )
    assert line == (
        r"my\ service\,v2,detector=a\,b\=c\ d field\ one=1i,ratio=0.25,"
        r'text="say \"hi\"\\now\nnext" 42'
    )


def test_field_values() -> None:
    assert format_field_value(3) == "3i"
    assert format_field_value(-3) == "-3i"
    assert format_field_value(2.0) == "2.0"
    assert format_field_value(1e-5) == "1e-05"
    assert format_field_value(False) == "false"
    assert format_field_value(float("inf")) is None
    assert format_field_value('"') == '"\\""'


@pytest.mark.parametrize("bad", ["", "a\nb", "ends\\"])
def test_unrepresentable_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="line protocol"):
        escape_key(bad)
    with pytest.raises(ValueError, match="line protocol"):
        escape_measurement(bad)


_safe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"),
    min_size=1,
    max_size=12,
)


def _unescape(text: str) -> str:
    return re.sub(r"\\([,= ])", r"\1", text)


@given(measurement=_safe_text, tag_value=_safe_text, field_key=_safe_text, value=st.integers())
def test_escaped_line_splits_back_into_its_parts(
    measurement: str, tag_value: str, field_key: str, value: int
) -> None:
    line = format_line(measurement, {"detector": tag_value}, [(field_key, value)], 7)
    assert line is not None and "\n" not in line
    sections = re.split(r"(?<!\\) ", line)
    assert len(sections) == 3 and sections[2] == "7"
    head, fields = sections[0], sections[1]
    name, tags = re.split(r"(?<!\\),", head, maxsplit=1)
    assert _unescape(name) == measurement
    tag_key, tag_text = re.split(r"(?<!\\)=", tags)
    assert (tag_key, _unescape(tag_text)) == ("detector", tag_value)
    key_text, value_text = re.split(r"(?<!\\)=", fields)
    assert (_unescape(key_text), value_text) == (field_key, f"{value}i")


def test_influx_delivery_counters_come_last_without_rates() -> None:
    stats = Stats("receiver", "gf1", period=10, influx_url="http://127.0.0.1:1/write?db=x")
    try:
        stats.counter("frames").inc(2)
        line = stats.line_protocol(now_ns=5)
        assert line == (
            "receiver,detector=gf1 frames=2i,frames_rate=0.0,influx_posted_lines=0i,"
            "influx_failed_posts=0i,influx_dropped_lines=0i 5"
        )
        with pytest.raises(ValueError, match="'influx_posted_lines' is already used"):
            stats.counter("influx_posted_lines")
    finally:
        stats.close()


def test_rates_keep_six_significant_digits() -> None:
    stats = Stats("receiver", "gf1", period=10)
    frames = stats.counter("frames")
    stats.emit_now(now=T0)
    frames.inc(100)
    stats.emit_now(now=T0 + 3)
    assert stats.rates["frames"] == 33.3333
