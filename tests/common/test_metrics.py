"""Prometheus exposition of Stats: real HTTP scrapes of the metrics endpoint."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stddaq_common.runtime.stats import Stats


def scrape(port: int) -> str:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert response.status_code == 200
    return response.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def stats() -> Iterator[Stats]:
    stats = Stats("receiver", "gf1", period=10)
    yield stats
    stats.close()


def test_scrape_reads_current_values_with_the_detector_label(stats: Stats) -> None:
    frames = stats.counter("frames", "frames received")
    depth = stats.gauge("queue_depth", "frames waiting", initial=0)
    stats.gauge("state", initial="idle")  # strings are not exposed
    port = stats.serve_metrics(0)
    assert port > 0 and stats.metrics_port == port
    label = (("detector", "gf1"),)
    first = samples(scrape(port))
    assert first[("stddaq_receiver_frames_total", label)] == 0
    assert first[("stddaq_receiver_queue_depth", label)] == 0

    frames.inc(1200)
    depth.set(3)
    stats.emit_now(now=1000.0)
    frames.inc(300)
    stats.emit_now(now=1010.0)
    second = samples(scrape(port))
    assert second[("stddaq_receiver_frames_total", label)] == 1500
    assert second[("stddaq_receiver_frames_rate", label)] == 30.0
    assert second[("stddaq_receiver_queue_depth", label)] == 3
    assert not any("state" in name for name, _ in second)
    text = scrape(port)
    assert "# HELP stddaq_receiver_frames_total frames received" in text
    assert "# TYPE stddaq_receiver_frames_total counter" in text
    assert "# TYPE stddaq_receiver_queue_depth gauge" in text


def test_extra_tags_become_labels_and_names_are_sanitised() -> None:
    stats = Stats("live-stream", "gf1", period=10, tags={"stream": "tcp://*:9000"})
    try:
        stats.counter("sent").inc(2)
        port = stats.serve_metrics(0)
        found = samples(scrape(port))
        assert (
            found[("stddaq_live_stream_sent_total", (("detector", "gf1"), ("stream", "tcp://*:9000")))] == 2
        )
    finally:
        stats.close()


def test_each_stats_has_its_own_registry_not_the_global_one() -> None:
    first = Stats("receiver", "gf1", period=10)
    second = Stats("writer", "gf1", period=10)
    try:
        first.counter("frames").inc(1)
        second.counter("written").inc(2)
        first_text = scrape(first.serve_metrics(0))
        second_text = scrape(second.serve_metrics(0))
        assert "stddaq_receiver_frames_total" in first_text
        assert "stddaq_writer" not in first_text
        assert "stddaq_writer_written_total" in second_text
        assert "stddaq_receiver" not in second_text
        global_text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
        assert "stddaq_" not in global_text
    finally:
        first.close()
        second.close()


def test_close_releases_the_port_and_serving_twice_is_refused(stats: Stats) -> None:
    port = stats.serve_metrics(0)
    with pytest.raises(RuntimeError, match="already served"):
        stats.serve_metrics(0)
    stats.close()
    assert stats.metrics_port is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    again = Stats("receiver", "gf1", period=10)
    try:
        assert again.serve_metrics(port) == port  # the port is free again
    finally:
        again.close()


def test_a_taken_port_is_an_oserror(stats: Stats) -> None:
    port = stats.serve_metrics(0)
    other = Stats("writer", "gf1", period=10)
    try:
        with pytest.raises(OSError):
            other.serve_metrics(port)
    finally:
        other.close()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_exposition_passes_promtool_check_metrics(stats: Stats) -> None:
    stats.counter("frames", "frames received").inc(5)
    stats.counter("missed_packets", "packets that never arrived")
    stats.gauge("queue_depth", "frames waiting", initial=0).set(2)
    stats.gauge("connected", "camera connected", initial=False).set(True)
    text = scrape(stats.serve_metrics(0))
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_influx_delivery_counters_are_exposed() -> None:
    stats = Stats("receiver", "gf1", period=10, influx_url="http://127.0.0.1:1/write?db=x")
    try:
        found = samples(scrape(stats.serve_metrics(0)))
        label = (("detector", "gf1"),)
        for name in ("posted_lines", "failed_posts", "dropped_lines"):
            assert found[(f"stddaq_receiver_influx_{name}_total", label)] == 0
    finally:
        stats.close()
