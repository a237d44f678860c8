"""Stats lines posted to a real InfluxDB 1.x (influxd) and read back with /query."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stddaq_common.runtime.counters import Counter
from stddaq_common.runtime.influx import InfluxPoster
from stddaq_common.runtime.stats import Stats

INFLUXD = shutil.which("influxd")
pytestmark = pytest.mark.skipif(INFLUXD is None, reason="influxd not installed")

START_DEADLINE_S = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def influxd_config(root: Path, http_port: int, rpc_port: int) -> str:
    return f"""
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{root}/meta"
  logging-enabled = false
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[retention]
  enabled = false
[shard-precreation]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  pprof-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
"""


@dataclass
class Influx:
    url: str
    process: subprocess.Popen[bytes]

    def query(self, q: str, db: str | None = None) -> Any:
        params = {"q": q} if db is None else {"q": q, "db": db}
        response = httpx.post(f"{self.url}/query", params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def create_database(self, name: str) -> str:
        self.query(f'CREATE DATABASE "{name}"')
        return f"{self.url}/write?db={name}"


def _wait_for_ping(url: str, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/ping", timeout=5).status_code == 204:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


def stop_influxd(process: subprocess.Popen[bytes]) -> None:
    """Stop one influxd we started (by its PID) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def start_influxd(root: Path, http_port: int, rpc_port: int) -> Influx | None:
    """influxd on loopback ports with its data under `root`; None if it did not come up."""
    assert INFLUXD is not None
    config = root / "influxd.conf"
    config.write_text(influxd_config(root, http_port, rpc_port))
    url = f"http://127.0.0.1:{http_port}"
    with (root / "influxd.log").open("ab") as log:
        process = subprocess.Popen([INFLUXD, "-config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        if _wait_for_ping(url, process):
            return Influx(url, process)
    except BaseException:
        stop_influxd(process)
        raise
    stop_influxd(process)
    return None


def start_influxd_on_free_ports(root: Path) -> Influx:
    for _attempt in range(3):  # a free port may be taken by someone else before influxd binds
        started = start_influxd(root, free_port(), free_port())
        if started is not None:
            return started
    log = (root / "influxd.log").read_text(errors="replace")
    pytest.fail(f"influxd did not answer /ping; its log:\n{log[-3000:]}")


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    started = start_influxd_on_free_ports(tmp_path_factory.mktemp("influxd"))
    try:
        yield started
    finally:
        stop_influxd(started.process)


def field_types(influx: Influx, db: str, measurement: str) -> dict[str, str]:
    result = influx.query(f'SHOW FIELD KEYS FROM "{measurement}"', db)
    [series] = result["results"][0]["series"]
    return {key: kind for key, kind in series["values"]}


def select_all(influx: Influx, db: str, measurement: str) -> list[dict[str, Any]]:
    result = influx.query(f'SELECT * FROM "{measurement}"', db)
    [series] = result["results"][0]["series"]
    return [dict(zip(series["columns"], row, strict=True)) for row in series["values"]]


def test_stats_lines_arrive_with_fields_tags_and_integer_types(influx: Influx) -> None:
    url = influx.create_database("stddaq")
    stats = Stats("receiver", "gf1", period=10, influx_url=url, tags={"stream": "tcp://cam 1"})
    frames = stats.counter("frames", "frames received")
    missed = stats.counter("n_missed_packets")
    stats.gauge("queue_depth", initial=0).set(4)
    stats.gauge("avg_throughput").set(1.25)
    stats.gauge("state", initial="").set('recording "run, 1"')
    try:
        stats.emit_now(now=1000.0)
        frames.inc(500)
        missed.inc(3)
        stats.emit_now(now=1010.0)
        assert stats.poster is not None and stats.poster.flush(30)
        assert stats.poster.posted.value == 2
        assert stats.poster.failed.value == 0
    finally:
        stats.close()

    rows = select_all(influx, "stddaq", "receiver")
    assert len(rows) == 2
    last = rows[-1]
    assert last["detector"] == "gf1" and last["stream"] == "tcp://cam 1"
    assert last["frames"] == 500 and last["frames_rate"] == 50.0
    assert last["n_missed_packets"] == 3 and last["n_missed_packets_rate"] == 0.3
    assert last["queue_depth"] == 4 and last["avg_throughput"] == 1.25
    assert last["state"] == 'recording "run, 1"'
    types = field_types(influx, "stddaq", "receiver")
    assert types["frames"] == "integer" and types["n_missed_packets"] == "integer"
    assert types["queue_depth"] == "integer" and types["influx_posted_lines"] == "integer"
    assert types["frames_rate"] == "float" and types["avg_throughput"] == "float"
    assert types["state"] == "string"


def test_escaped_measurement_and_tags_round_trip(influx: Influx) -> None:
    url = influx.create_database("escapes")
    poster = InfluxPoster(url)
    stats = Stats("live stream,v2", "gf1", period=10, tags={"address": "a=b, c"})
    stats.counter("sent").inc(9)
    line = stats.line_protocol()
    assert line is not None
    try:
        assert poster.post(line)
        assert poster.flush(30)
        assert (poster.posted.value, poster.failed.value) == (1, 0)
    finally:
        poster.close()
    [row] = select_all(influx, "escapes", "live stream,v2")
    assert (row["address"], row["detector"], row["sent"]) == ("a=b, c", "gf1", 9)


def test_rejected_write_is_logged_counted_and_dropped(
    influx: Influx, caplog: pytest.LogCaptureFixture
) -> None:
    poster = InfluxPoster(f"{influx.url}/write?db=no_such_db")
    try:
        with caplog.at_level(logging.WARNING, logger="stddaq.influx"):
            assert poster.post("receiver,detector=gf1 frames=1i 1")
            assert poster.flush(30)
        assert (poster.posted.value, poster.failed.value, poster.dropped.value) == (0, 1, 1)
        assert poster.queued == 0
        assert any(
            'HTTP 404: database not found: "no_such_db"' in record.getMessage() for record in caplog.records
        ), caplog.text
    finally:
        poster.close()


def test_bad_line_is_rejected_not_retried(influx: Influx) -> None:
    url = influx.create_database("bad_lines")
    poster = InfluxPoster(url)
    try:
        assert poster.post("not line protocol")
        assert poster.flush(30)
        assert (poster.failed.value, poster.dropped.value, poster.queued) == (1, 1, 0)
    finally:
        poster.close()


def test_unreachable_influx_never_blocks_and_counts_everything() -> None:
    port = free_port()  # nothing listens here
    posted, failed, dropped = Counter("p"), Counter("f"), Counter("d")
    poster = InfluxPoster(
        f"http://127.0.0.1:{port}/write?db=x",
        max_queued_lines=2,
        posted=posted,
        failed=failed,
        dropped=dropped,
    )
    assert poster.post("m f=1i 1")
    assert poster.post("m f=2i 2")
    assert not poster.post("m f=3i 3")  # queue full: refused at once, counted
    assert dropped.value == 1
    deadline = time.monotonic() + 30
    while failed.value == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert failed.value >= 1 and posted.value == 0
    poster.close(timeout=30)  # one last attempt, then the lines are given up
    assert dropped.value == 3 and poster.queued == 0
    assert not poster.post("m f=4i 4")  # closed: refused, counted
    assert dropped.value == 4


def test_lines_queued_while_influx_is_down_are_delivered_when_it_is_back(
    tmp_path: Path,
) -> None:
    first = start_influxd_on_free_ports(tmp_path)
    http_port = int(first.url.rsplit(":", 1)[1])
    rpc_port = free_port()
    url = first.create_database("later")
    stop_influxd(first.process)  # the database stays in tmp_path

    poster = InfluxPoster(url)
    restarted: Influx | None = None
    try:
        poster.post("m,detector=gf1 f=1i 1")
        poster.post("m,detector=gf1 f=2i 2")
        deadline = time.monotonic() + 30
        while poster.failed.value == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert poster.failed.value >= 1 and poster.queued == 2  # kept for a retry
        restarted = start_influxd(tmp_path, http_port, rpc_port)
        assert restarted is not None, "influxd did not restart on its old port"
        assert poster.flush(90)
        assert (poster.posted.value, poster.dropped.value) == (2, 0)
        assert [row["f"] for row in select_all(restarted, "later", "m")] == [1, 2]
    finally:
        poster.close()
        if restarted is not None:
            stop_influxd(restarted.process)
