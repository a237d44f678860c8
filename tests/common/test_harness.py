"""The shared process harness (stddaq_common.testing) and the rate-limited logger."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import pytest

from stddaq_common.config.model import load_config
from stddaq_common.rate_limited_log import RateLimitedLog
from stddaq_common.runtime.child_process import ChildProcess
from stddaq_common.testing.configs import pco_config, write_pco_config
from stddaq_common.testing.processes import (
    free_port,
    start_service,
    stats_fields,
    stop_service,
    unique_name,
    wait_until,
)

PYTHON = sys.executable
SERVICE = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
print("starting", flush=True)
print("to stderr", file=sys.stderr, flush=True)
print("READY toy pid=1", flush=True)
while True:
    time.sleep(0.05)
"""


def test_a_service_is_ready_its_output_is_kept_and_stop_checks_the_exit_status(tmp_path: Path) -> None:
    log = tmp_path / "toy.log"
    toy = start_service([PYTHON, "-c", SERVICE], name="toy", log_path=log)
    assert toy.ready and toy.ready_line == "READY toy pid=1"
    assert list(toy.lines)[:3] == ["starting", "to stderr", "READY toy pid=1"]
    with pytest.raises(AssertionError, match="toy exited with 7, not 0"):
        stop_service(toy, expect=0)
    assert toy.poll() == 7
    assert log.read_text().splitlines()[:3] == ["starting", "to stderr", "READY toy pid=1"]


def test_stderr_to_a_file_and_a_clean_exit_passes_the_check(tmp_path: Path) -> None:
    toy = start_service([PYTHON, "-c", SERVICE], stderr=tmp_path / "toy.err")
    assert stop_service(toy, expect=7) == 7
    assert toy.stderr_text() == "to stderr\n"
    assert "to stderr" not in toy.lines


def test_a_process_that_exits_before_ready_fails_at_once_with_its_output() -> None:
    code = "import sys; print('cannot start: no camera', flush=True); sys.exit(1)"
    with pytest.raises(AssertionError, match=r"(?s)did not print READY.*exit 1.*cannot start: no camera"):
        start_service([PYTHON, "-c", code], name="broken", deadline_s=600)


def test_a_process_that_ignores_sigterm_is_killed_after_the_deadline() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('READY x', flush=True); time.sleep(600)"
    )
    stubborn = start_service([PYTHON, "-c", code])
    assert stubborn.stop(timeout=0.5) == -signal.SIGKILL


def test_a_child_process_starts_again_after_it_ended() -> None:
    child = ChildProcess([PYTHON, "-c", "print('READY again', flush=True)"], keep_lines=10)
    for _ in range(2):
        child.start()
        assert child.wait_ready(60) and child.wait(60) == 0
    assert list(child.lines) == ["READY again", "READY again"]


def test_wait_until_returns_the_value_or_names_what_it_waited_for() -> None:
    values = iter([None, 0, "", "done"])
    assert wait_until("a value", lambda: next(values), every=0) == "done"
    with pytest.raises(AssertionError, match="not within 0 s: the impossible"):
        wait_until("the impossible", lambda: False, deadline_s=0)


def test_ports_and_names_are_never_handed_out_twice() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50 and all(1024 < port < 65536 for port in ports)
    assert len({unique_name("det") for _ in range(100)}) == 100


def test_config_builder_gives_a_valid_config(tmp_path: Path) -> None:
    path = write_pco_config(tmp_path / "daq.json", "cam-x", 32, 48, number_of_writers=3)
    config = load_config(path)
    assert (config.detector_name, config.image_pixel_height, config.image_pixel_width) == ("cam-x", 32, 48)
    assert config.writers == 3
    assert pco_config("cam-y", bit_depth=8)["bit_depth"] == 8


def test_stats_fields_are_the_last_line_of_that_service() -> None:
    lines = [
        "t INFO x stddaq.stats: receiver,detector=d a=1i,b=2.5 17",
        "t INFO x stddaq.stats: writer,detector=d a=9i 18",
        "t INFO x stddaq.stats: receiver,detector=d a=3i,b=0.5 19",
    ]
    assert stats_fields(lines, "receiver") == {"a": "3i", "b": "0.5"}
    with pytest.raises(AssertionError, match="no stats line from driver"):
        stats_fields(lines, "driver")


def test_rate_limited_log_shows_one_per_key_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    limited = RateLimitedLog(logging.getLogger("test.limited"), 5.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.limited"):
        assert limited.warning("bad", "bad input %d", 1)
        assert not limited.warning("bad", "bad input %d", 2)
        assert limited.warning("other", "other input")  # each key has its own interval
        assert not limited.warning("bad", "bad input %d", 3)
        assert limited.held_back("bad") == 2
        now[0] += 5.0
        assert limited.warning("bad", "bad input %d", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "bad input 1",
        "other input",
        "bad input 4 (2 more like this since the last report)",
    ]
    assert limited.held_back("bad") == 0
