"""The image smoke test (docker/stddaq_image_check.py) on the development environment."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from tests.deploy.tools import REPO

SCRIPT = REPO / "docker" / "stddaq_image_check.py"


def test_it_imports_every_module_of_a_service_and_reports_json() -> None:
    env = dict(os.environ, STDDAQ_SERVICE="stddaq_writer")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["service"] == "stddaq_writer"
    assert report["modules_checked"] > 10
    assert {"h5py", "numpy", "pyzmq"} <= set(report["imported"])


def test_it_finds_lazy_imports_and_skips_type_checking_ones() -> None:
    spec = importlib.util.spec_from_file_location("image_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    source = REPO / "libs" / "stddaq_common" / "src" / "stddaq_common" / "wire" / "compression.py"
    names = module.imports_in_source([source])
    assert "lz4" in names  # imported inside a function
    assert "_typeshed" not in module.imports_in_source(
        sorted((REPO / "libs" / "stddaq_common" / "src" / "stddaq_common").rglob("*.py"))
    )


def test_without_a_service_it_fails() -> None:
    env = {k: v for k, v in os.environ.items() if k != "STDDAQ_SERVICE"}
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "STDDAQ_SERVICE" in done.stderr
