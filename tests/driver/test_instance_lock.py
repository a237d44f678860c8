"""One driver per detector: the lock refuses a second holder and leaves no file behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stddaq_driver.instance_lock import InstanceLock, InstanceLockError


def test_second_holder_is_refused_and_close_removes_the_file(tmp_path: Path) -> None:
    first = InstanceLock(str(tmp_path), "det")
    with pytest.raises(
        InstanceLockError, match=rf"another driver for detector 'det' is running \(pid {os.getpid()}"
    ):
        InstanceLock(str(tmp_path), "det")
    first.close()
    assert not (tmp_path / "det-driver.lock").exists()
    second = InstanceLock(str(tmp_path), "det")
    second.close()
    assert list(tmp_path.iterdir()) == []


def test_a_killed_holder_does_not_block_the_next_driver(tmp_path: Path) -> None:
    code = (
        "import sys, time; from stddaq_driver.instance_lock import InstanceLock; "
        f"InstanceLock({str(tmp_path)!r}, 'det'); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(InstanceLockError, match=f"pid {holder.pid}"):
            InstanceLock(str(tmp_path), "det")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            lock = InstanceLock(str(tmp_path), "det")
            break
        except InstanceLockError:
            assert time.monotonic() < deadline, "the lock of a killed driver was not released"
            time.sleep(0.1)
    lock.close()
    assert not (tmp_path / "det-driver.lock").exists()
