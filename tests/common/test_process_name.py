"""A service process shows its service in ps: `stddaq-<service>`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stddaq_common.runtime.process_name import command_name


def test_command_names_fit_the_kernels_15_characters() -> None:
    assert command_name("writer") == "stddaq-writer"
    assert command_name("live_stream") == "stddaq-live-str"
    assert command_name("fake_camera") == "stddaq-fake-cam"


def test_a_process_names_itself() -> None:
    code = (
        "from pathlib import Path; from stddaq_common.runtime.process_name import name_process;"
        "assert name_process('receiver'); print(Path('/proc/self/comm').read_text().strip())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "stddaq-receiver"
    assert Path("/proc/self/comm").exists()


def test_the_fake_camera_started_as_python_m_shows_its_name() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "stddaq_fake_camera", "--address", "tcp://127.0.0.1:*", "--shape", "4", "4",
         "--rate", "1"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("READY"):
                break
        assert Path(f"/proc/{process.pid}/comm").read_text().strip() == "stddaq-fake-cam"
    finally:
        process.terminate()
        process.wait(timeout=30)
