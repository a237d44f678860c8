"""The soak (scripts/soak.py, `make soak`) in a short version: 25 s of the whole stack with
acquisitions started and stopped in a loop. Nothing is lost, nothing restarts, memory stays
flat, the stack stops clean. `make soak` runs at half the measured capacity; this short
version runs at a fixed modest rate (300 Hz of 128x128 frames) so that its verdict does
not depend on how busy the machine was while it measured the capacity."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.faults.rig import PYTHON

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_short_soak_loses_nothing_and_memory_stays_flat(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    result = subprocess.run(
        [
            PYTHON, str(REPO / "scripts" / "soak.py"), "--seconds", "25", "--shape", "128", "128",
            "--acquisition-seconds", "4", "--rate", "300", "--json", str(report_path),
            "--log", str(tmp_path / "stack.log"),
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
    )  # fmt: skip
    summary = "\n".join(line for line in result.stdout.splitlines() if not line.startswith("["))
    assert report_path.exists(), summary[-3000:] + "\n" + result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    print(summary)
    assert report["lost_frames"] == 0 and report["problems"] == [], summary
    assert report["acquisitions"] >= 3 and report["restarts"] == 0, summary
    assert report["ok"] and result.returncode == 0, summary
