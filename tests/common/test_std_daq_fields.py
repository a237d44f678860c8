"""std_daq's stats field names beside stddaq's, and Prometheus names in base units."""

from __future__ import annotations

import re

from stddaq_common.runtime.metrics import base_unit_name, metrics_text
from stddaq_common.runtime.stats import Stats
from stddaq_common.runtime.std_daq_fields import STD_DAQ_FIELDS, std_daq_values


def test_receiver_fields_sum_their_sources_and_keep_types() -> None:
    stats = Stats("receiver", "gf1", period=10)
    stats.counter("frames_published").inc(7)
    stats.counter("missing_ids").inc(2)
    stats.counter("rejected_shape").inc(1)
    stats.counter("rejected_dtype").inc(3)
    stats.counter("image_bytes_written").inc(100)
    stats.add_std_daq_fields(STD_DAQ_FIELDS["receiver"])
    fields = dict(stats.fields())
    assert fields["processed_times"] == 7 and isinstance(fields["processed_times"], int)
    assert fields["n_missed_packets"] == 2
    assert fields["n_corrupted_images"] == 4  # every rejected_* counter, not their rates
    assert isinstance(fields["repetition_rate_hz"], float)
    assert isinstance(fields["avg_throughput"], float)
    line = stats.line_protocol(1)
    assert line is not None and "processed_times=7i" in line and "frames_published=7i" in line


def test_a_name_the_service_uses_itself_is_left_alone() -> None:
    fields: dict[str, int | float | bool | str] = {"n_written_images": 5, "images_written": 9}
    assert std_daq_values(fields, STD_DAQ_FIELDS["writer"]) == [("processed_times", 9)]


def test_without_the_table_nothing_is_added() -> None:
    stats = Stats("writer", "gf1", period=10)
    stats.counter("images_written").inc()
    assert [name for name, _ in stats.fields()] == ["images_written", "images_written_rate"]


def test_abbreviated_units_are_exposed_in_base_units() -> None:
    assert base_unit_name("last_write_latency_us") == ("last_write_latency_seconds", 1e-6)
    assert base_unit_name("write_latency_s") == ("write_latency_seconds", 1.0)
    assert base_unit_name("write_images_per_s") == ("write_images_per_second", 1.0)
    assert base_unit_name("viewers") == ("viewers", 1.0)
    stats = Stats("writer", "gf1", period=10, tags={"index": "1"})
    stats.gauge("last_write_latency_us", "time of the last write", initial=0.0).set(2500.0)
    text = metrics_text(stats).decode()
    assert re.search(
        r'^stddaq_writer_last_write_latency_seconds\{detector="gf1",index="1"\} 0\.0025$',
        text, re.MULTILINE,
    ), text
    assert "_us" not in text
