"""deploy/prometheus and deploy/grafana: a scrape config promtool accepts, on the ports every
launcher uses, and a dashboard that fits Grafana's dashboard model (schema written by us
from Grafana's documented JSON model: no Grafana installs from Debian or PyPI)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stddaq_stack.stack_spec import (
    DEFAULT_METRICS_PORT_BASE,
    DRIVER_METRICS_OFFSET,
    LIVE_STREAM_METRICS_OFFSET,
    RECEIVER_METRICS_OFFSET,
    WRITER_METRICS_OFFSET,
)
from tests.deploy.tools import tool

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "stddaq-dashboard.json"
SCHEMA = REPO / "deploy" / "grafana" / "dashboard.schema.json"


def dashboard_metric_names() -> set[str]:
    """Every stddaq metric name the dashboard's queries use."""
    document = json.loads(DASHBOARD.read_text())
    names = set()
    for panel in document["panels"]:
        for target in panel["targets"]:
            names |= set(re.findall(r"\bstddaq_[a-z0-9_]*[a-z0-9]\b", target["expr"]))
    return names


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) missing")
def test_promtool_accepts_the_scrape_config() -> None:
    result = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def scrape_ports() -> dict[str, list[int]]:
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS.read_text())
    ports = {}
    for job in config["scrape_configs"]:
        targets = [t for group in job["static_configs"] for t in group["targets"]]
        ports[job["job_name"]] = sorted(int(t.rsplit(":", 1)[1]) for t in targets)
    return ports


def test_scrape_ports_are_the_ones_stddaq_up_and_compose_use() -> None:
    base = DEFAULT_METRICS_PORT_BASE
    assert scrape_ports() == {
        "stddaq-receiver": [base + RECEIVER_METRICS_OFFSET],
        "stddaq-driver": [base + DRIVER_METRICS_OFFSET],
        "stddaq-live-stream": [base + LIVE_STREAM_METRICS_OFFSET],
        "stddaq-writer": [base + WRITER_METRICS_OFFSET, base + WRITER_METRICS_OFFSET + 1],
    }
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    from_compose = {}
    for name, service in compose["services"].items():
        command = service.get("command", [])
        if "--metrics-port" in command:
            from_compose[name] = int(command[command.index("--metrics-port") + 1])
    assert from_compose == {
        "receiver": base, "driver": base + 1, "writer-0": base + 100, "writer-1": base + 101,
        "live-stream-0": base + 10,
    }


def test_the_dashboard_fits_grafanas_dashboard_model() -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--schemafile", str(SCHEMA), str(DASHBOARD)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in document["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs))
    variables = {variable["name"] for variable in document["templating"]["list"]}
    used = set(re.findall(r"\$\{?([A-Za-z_]+)", DASHBOARD.read_text()))
    assert used <= variables, used - variables


def test_the_schema_refuses_a_broken_dashboard(tmp_path: Path) -> None:
    """The schema check can fail: a panel wider than the grid, a target without expr."""
    document = json.loads(DASHBOARD.read_text())
    document["panels"][0]["gridPos"]["w"] = 30
    del document["panels"][1]["targets"][0]["expr"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    result = subprocess.run(
        [tool("check-jsonschema"), "--schemafile", str(SCHEMA), str(broken)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode != 0
    assert "expr" in result.stdout + result.stderr


def test_the_dashboard_watches_every_service() -> None:
    names = dashboard_metric_names()
    for service in ("receiver", "driver", "writer", "live_stream"):
        assert any(name.startswith(f"stddaq_{service}_") for name in names), service
