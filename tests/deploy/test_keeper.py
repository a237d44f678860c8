"""The keeper's rule: start again what a kill or crash stopped, never what stopped cleanly.

(The keeper against the real engine: tests/compose, `docker kill` of every service.)
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.tools import REPO


@pytest.fixture(scope="module")
def keeper() -> ModuleType:
    """docker/stddaq_keeper.py as a module."""
    spec = importlib.util.spec_from_file_location("stddaq_keeper", REPO / "docker" / "stddaq_keeper.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def details(status: str, exit_code: int, *, restarting: bool = False, oneoff: bool = False) -> dict[str, Any]:
    """What GET /containers/<id>/json answers, the fields the keeper reads."""
    labels = {"com.docker.compose.oneoff": "True" if oneoff else "False"}
    return {
        "State": {
            "Status": status,
            "Running": status == "running",
            "Restarting": restarting,
            "ExitCode": exit_code,
        },
        "Config": {"Labels": labels},
    }


def test_killed_or_crashed_containers_are_started(keeper: ModuleType) -> None:
    assert keeper.should_start(details("exited", 137))  # docker kill, kill -9
    assert keeper.should_start(details("exited", 1))  # a crash


def test_clean_stops_running_and_restarting_containers_are_left_alone(keeper: ModuleType) -> None:
    assert not keeper.should_start(details("exited", 0))  # docker stop, compose stop
    assert not keeper.should_start(details("running", 0))
    assert not keeper.should_start(details("restarting", 137, restarting=True))  # the policy acts
    assert not keeper.should_start(details("created", 0))
    assert not keeper.should_start(details("exited", 137, oneoff=True))  # docker compose run


def test_it_needs_a_project(keeper: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        keeper.parse_args([])
    assert "--project" in capsys.readouterr().err
