"""The Dockerfile passes hadolint, the shell scripts shellcheck, the image list is one."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import ANSIBLE_DIR, REPO, SHELL_SCRIPTS, run, tool, tool_env


def images_of_services_tsv() -> list[tuple[str, str, str, str]]:
    """(image, wheel, console script, user) rows of docker/services.tsv."""
    rows = []
    for line in (REPO / "docker" / "services.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            image, wheel, script, user = line.split()
            rows.append((image, wheel, script, user))
    return rows


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    run([tool("hadolint"), "docker/Dockerfile"], tool_env(tmp_path))


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shellcheck_finds_nothing(script: Path, tmp_path: Path) -> None:
    run([tool("shellcheck"), "--severity=style", str(script)], tool_env(tmp_path))


def test_the_image_scripts_pass_ruff_and_mypy(tmp_path: Path) -> None:
    scripts = [str(path) for path in sorted((REPO / "docker").glob("*.py"))]
    env = tool_env(tmp_path)
    run([tool("ruff"), "check", *scripts], env)
    run([tool("mypy"), "--strict", "--cache-dir", str(tmp_path / "mypy"), *scripts], env)


def test_services_tsv_names_every_service_with_its_console_script() -> None:
    rows = images_of_services_tsv()
    assert [row[0] for row in rows] == ["fake-camera", "receiver", "writer", "driver", "live-stream", "web"]
    for image, wheel, script, user in rows:
        project = tomllib.loads(
            (REPO / "services" / wheel.removeprefix("stddaq_") / "pyproject.toml").read_text()
        )
        assert project["project"]["name"].replace("-", "_") == wheel, image
        assert script in project["project"]["scripts"], f"{image}: no console script {script}"
        assert user == ("root" if image == "writer" else "stddaq"), image


def test_the_role_transfers_the_same_images() -> None:
    defaults = yaml.safe_load((ANSIBLE_DIR / "roles" / "stddaq" / "defaults" / "main.yml").read_text())
    assert defaults["stddaq_images"] == [row[0] for row in images_of_services_tsv()]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert defaults["stddaq_version"] == project["project"]["version"]


@pytest.mark.parametrize("script", ["docker/build-images.sh", "docker/save-images.sh"])
def test_an_engine_that_does_not_answer_is_named_with_docker_host(script: str, tmp_path: Path) -> None:
    env = tool_env(tmp_path)
    socket = f"unix://{tmp_path}/no-engine.sock"
    env["DOCKER_HOST"] = socket
    argument = "driver" if script.endswith("build-images.sh") else str(tmp_path / "out")
    done = subprocess.run(
        ["bash", script, argument],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"no Docker engine answers at {socket}" in done.stderr
    assert "DOCKER_HOST" in done.stderr
    assert not (tmp_path / "out").exists(), "nothing is done without an engine"


def test_image_archives_never_build() -> None:
    makefile = (REPO / "Makefile").read_text()
    rule = makefile.split("\nimage-archives:", 1)[1].split("\n\n", 1)[0]
    prerequisites = rule.split("\n", 1)[0]
    assert "images" not in prerequisites, "make image-archives saves what make images built"
    assert "build-images" not in rule
