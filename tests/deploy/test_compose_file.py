"""compose.yaml is the Ansible template rendered for the demo detector, and a valid stack.

The top-level compose.yaml and deploy/stddaq-demo.json must be exactly what the role's
templates make of ansible/inventories/demo; Compose itself (the v2 binary, no engine
needed) must accept the file; and its structure must keep the deployment rules: host
network only, the receiver owning the shared memory, readiness healthchecks, start order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stddaq_common.config.model import load_config
from tests.deploy.tools import DEMO_INVENTORY, REPO, compose_binary, run, tool, tool_env

RING_READERS = ("writer-0", "writer-1", "live-stream-0")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo inventory rendered by ansible/render.yml as the checkout's site (project
    checkout-stddaq-demo); the folder of the demo detector."""
    root = tmp_path_factory.mktemp("render")
    (root / "filebeat").mkdir()
    run(
        [
            tool("ansible-playbook"),
            "-i",
            str(DEMO_INVENTORY),
            "ansible/render.yml",
            "-e",
            f"stddaq_root={root}",
            "-e",
            f"stddaq_filebeat_inputs_dir={root / 'filebeat'}",
            "-e",
            "stddaq_site=checkout",
        ],
        tool_env(root),
    )
    return root / "stddaq-demo"


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """compose.yaml as Compose resolves it, with the fake-camera profile (JSON)."""
    home = tmp_path_factory.mktemp("compose")
    env = tool_env(home)
    env["STDDAQ_DATA_DIR"] = str(home / "data")
    output = run(
        [compose_binary(), "-f", "compose.yaml", "--profile", "fake-camera", "config", "--format", "json"],
        env,
    )
    result: dict[str, Any] = json.loads(output[output.index("{") :])
    return result


def test_compose_yaml_is_the_rendered_template(rendered: Path) -> None:
    expected = (rendered / "compose.yaml").read_text()
    assert (REPO / "compose.yaml").read_text() == expected, (
        "compose.yaml differs from the rendering of ansible/roles/stddaq/templates/compose.yaml.j2 "
        f"for ansible/inventories/demo: copy {rendered / 'compose.yaml'} over it"
    )


def test_demo_config_is_the_rendered_config(rendered: Path) -> None:
    expected = (rendered / "deploy" / "stddaq-demo.json").read_text()
    assert (REPO / "deploy" / "stddaq-demo.json").read_text() == expected


def test_filebeat_input_is_the_rendered_template(rendered: Path) -> None:
    expected = (rendered.parent / "filebeat" / "stddaq.yml").read_text()
    assert (REPO / "deploy" / "filebeat" / "stddaq.yml").read_text() == expected


def test_filebeat_input_reads_docker_logs_as_json() -> None:
    inputs = yaml.safe_load((REPO / "deploy" / "filebeat" / "stddaq.yml").read_text())
    assert isinstance(inputs, list) and len(inputs) == 1
    stddaq = inputs[0]
    assert stddaq["type"] == "filestream" and stddaq["id"] == "stddaq-services"
    assert stddaq["paths"] == ["/var/lib/docker/containers/*/*-json.log"]
    parsers = [next(iter(parser)) for parser in stddaq["parsers"]]
    assert parsers == ["container", "ndjson"]
    assert stddaq["parsers"][1]["ndjson"]["message_key"] == "message"


def test_demo_config_loads() -> None:
    config = load_config(REPO / "deploy" / "stddaq-demo.json")
    assert config.detector_name == "stddaq-demo"
    assert config.ipc_dir == "/run/stddaq"
    assert config.log_format == "json"


def test_compose_config_quiet_accepts_the_file(tmp_path: Path) -> None:
    env = tool_env(tmp_path)
    run([compose_binary(), "-f", "compose.yaml", "config", "--quiet"], env)
    run([compose_binary(), "-f", "compose.yaml", "--profile", "fake-camera", "config", "--quiet"], env)


def test_compose_spec_schema_accepts_the_file(tmp_path: Path) -> None:
    run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        tool_env(tmp_path),
    )


def test_every_service_uses_the_host_network_and_no_network_is_defined(resolved: dict[str, Any]) -> None:
    assert not resolved.get("networks"), "no Compose network may be created (bridges are forbidden here)"
    for name, service in resolved["services"].items():
        assert service.get("network_mode") == "host", name
        assert not service.get("networks"), name
        assert "ports" not in service, name


def test_the_ring_lives_in_a_volume_shared_by_the_receiver_and_its_readers(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name in ("receiver", *RING_READERS):
        mounts = {mount["target"]: mount for mount in services[name]["volumes"]}
        assert mounts["/dev/shm"]["type"] == "volume" and mounts["/dev/shm"]["source"] == "ring", name
        assert services[name]["ipc"] == "private", f"{name} depends on no other container's namespace"
        assert "shm_size" not in services[name], name
    for name in RING_READERS:
        assert services[name]["depends_on"]["receiver"]["condition"] == "service_healthy", name
        assert not services[name]["depends_on"]["receiver"].get("restart"), (
            f"restarting the receiver must not restart {name}"
        )
        assert "--exit-if-orphaned" not in services[name]["healthcheck"]["test"], name
    ring = resolved["volumes"]["ring"]["driver_opts"]
    assert ring["type"] == "tmpfs"
    size_mib = int(ring["o"].split("size=")[1].split("m,")[0])
    assert size_mib * 2**20 >= 1024 * 1024 * 2 * 1000, "/dev/shm must hold the whole ring"


def test_two_keepers_watch_the_project_through_the_engine_socket(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    keeper = services["keeper"]
    assert resolved["name"] == "checkout-stddaq-demo"
    assert keeper["scale"] == 2
    assert keeper["entrypoint"] == ["stddaq-keeper"]
    assert keeper["command"] == ["--project", resolved["name"]]
    assert keeper["cap_drop"] == ["ALL"] and "cap_add" not in keeper
    mounts = {mount["target"]: mount for mount in keeper["volumes"]}
    assert set(mounts) == {"/run/docker.sock"}
    assert set(keeper["depends_on"]) == set(services) - {"keeper"}, "started last, stopped first"
    assert keeper["depends_on"]["fake-camera"]["required"] is False


def test_config_is_mounted_read_only_and_sockets_share_a_volume(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        if name in ("fake-camera", "keeper"):
            continue
        mounts = {mount["target"]: mount for mount in service["volumes"]}
        config = mounts["/etc/stddaq/stddaq-demo.json"]
        assert config["type"] == "bind" and config["read_only"] is True, name
        assert mounts["/run/stddaq"]["type"] == "volume", name
        assert mounts["/run/stddaq"]["source"] == "ipc", name
    for name in ("writer-0", "writer-1"):
        data = {m["target"]: m for m in resolved["services"][name]["volumes"]}["/data"]
        assert not data.get("read_only"), f"{name} writes the data folder"
    driver_data = {m["target"]: m for m in resolved["services"]["driver"]["volumes"]}["/data"]
    assert driver_data["read_only"] is True, "the driver only looks at the data folder"
    assert resolved["volumes"]["ipc"]["driver_opts"]["type"] == "tmpfs"


def test_services_restart_have_healthchecks_and_start_in_order(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"][:2] == ["CMD", "stddaq-health"], name
        assert service["image"].endswith(":0.1.0"), name
        assert service["read_only"] is True, name
    assert "depends_on" not in services["receiver"]
    assert services["driver"]["depends_on"]["receiver"]["condition"] == "service_healthy"
    for name in ("writer-0", "writer-1"):
        assert services[name]["depends_on"]["driver"]["condition"] == "service_healthy"
    assert services["fake-camera"]["profiles"] == ["fake-camera"]


def test_only_the_writer_and_the_keeper_run_as_root(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        if name.startswith("writer-"):
            assert service["user"] == "root"
            assert service["cap_drop"] == ["ALL"]
            assert set(service["cap_add"]) <= {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"}
        elif name == "keeper":
            assert service["user"] == "root", "it opens the engine's socket (root's), with no capabilities"
        else:
            assert "user" not in service, f"{name} runs as the image's user (stddaq)"


def test_without_the_profile_the_fake_camera_stays_out(tmp_path: Path) -> None:
    output = run([compose_binary(), "-f", "compose.yaml", "config", "--services"], tool_env(tmp_path))
    services = set(output.split())
    assert "fake-camera" not in services
    assert {"receiver", "driver", "writer-0", "writer-1", "live-stream-0"} <= services
