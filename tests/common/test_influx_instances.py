"""Two writer processes of one detector are two series in a real influxd: the runner tags
each instance (its index), and std_daq's field names are written beside stddaq's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.common.configs import write_pco_config
from tests.common.test_influx import (
    INFLUXD,
    Influx,
    start_influxd_on_free_ports,
    stop_influxd,
)

pytestmark = pytest.mark.skipif(INFLUXD is None, reason="influxd not installed")

DEADLINE_S = 90.0
STD_DAQ_WRITER_FIELDS = {
    "processed_times": "integer",
    "n_written_images": "integer",
    "n_corrupted_images": "integer",
    "repetition_rate_hz": "float",
    "avg_throughput": "float",
}


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    started = start_influxd_on_free_ports(tmp_path_factory.mktemp("influxd"))
    try:
        yield started
    finally:
        stop_influxd(started.process)


def start_writer(config: Path, index: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stddaq_writer", str(config), "--index", str(index)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(DEADLINE_S)
    return process.returncode


def test_two_writers_are_two_series_with_std_daqs_fields(influx: Influx, tmp_path: Path) -> None:
    detector = f"inflx{uuid.uuid4().hex[:8]}"
    db = f"db_{detector}"
    url = influx.create_database(db)
    (tmp_path / "ipc").mkdir()
    config = write_pco_config(
        tmp_path / "daq.json", detector, 32, 48, number_of_writers=2, ipc_dir=str(tmp_path / "ipc"),
        stats_collection_period=0.5, influxdb_url=url,
    )
    writers = [start_writer(config, k, tmp_path / f"writer{k}.log") for k in range(2)]
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            result = influx.query('SHOW SERIES FROM "writer"', db)["results"][0]
            series = sorted(value[0] for value in result.get("series", [{}])[0].get("values", []))
            if len(series) >= 2:
                break
            for k, writer in enumerate(writers):
                assert writer.poll() is None, (tmp_path / f"writer{k}.log").read_text()
            assert time.monotonic() < deadline, f"series seen: {series}"
            time.sleep(0.2)
    finally:
        codes = [stop(writer) for writer in writers]
    assert codes == [0, 0], [(tmp_path / f"writer{k}.log").read_text()[-2000:] for k in range(2)]
    assert series == [f"writer,detector={detector},index=0", f"writer,detector={detector},index=1"]
    keys = influx.query('SHOW FIELD KEYS FROM "writer"', db)["results"][0]["series"][0]["values"]
    types = dict((key, kind) for key, kind in keys)
    for name, kind in STD_DAQ_WRITER_FIELDS.items():
        assert types.get(name) == kind, (name, types)
    assert types["images_written"] == "integer"  # stddaq's own names stay
    for index in ("0", "1"):
        rows = influx.query(
            f"SELECT n_written_images, images_written FROM \"writer\" WHERE \"index\" = '{index}'",
            db,
        )["results"][0]["series"][0]["values"]
        assert rows and all(row[1] == row[2] for row in rows)
