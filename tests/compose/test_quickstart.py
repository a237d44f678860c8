"""docs/deployment.md's quick start, run exactly as written in a fresh copy of the tree.

The fenced block under "## Quick start: the demo stack" is taken from the document and run
line by line (bash -e) in a copy of the repository's files (what `git clone` gives, plus
files not committed yet), with the environment a user has: DOCKER_HOST (the engine),
BASE_IMAGE only where nothing can be pulled, and no DOCKER_CONFIG (the block sets it).
Then the files the block wrote are read back: 300 images, every pixel the camera's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
import h5py

from tests.compose.conftest import record
from tests.compose.engine import REPO, check_images, port_is_free

HEADING = "## Quick start: the demo stack"
PROJECT = "checkout-stddaq-demo"
PORTS = (5000, 8080, 8090, 9990, 20000)


def quick_start_block() -> str:
    """The first ```bash block after the quick-start heading of docs/deployment.md."""
    text = (REPO / "docs" / "deployment.md").read_text()
    assert HEADING in text, f"docs/deployment.md has no heading {HEADING!r}"
    after = text.split(HEADING, 1)[1]
    block = after.split("```bash\n", 1)[1].split("```", 1)[0]
    assert "docker compose" in block and "curl" in block
    return block


def fresh_copy(target: Path) -> Path:
    """The repository's files as a clone has them (tracked and not ignored), nothing built."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def close_reasons(folder: Path) -> str:
    """The close reasons the writer files of a failed acquisition recorded (why it failed)."""
    lines = []
    for path in sorted(folder.glob("*.h5")) if folder.is_dir() else []:
        try:
            with h5py.File(path, "r") as file:
                attributes = {key: str(value) for key, value in file.attrs.items()}
                for group in file.values():
                    attributes.update({key: str(value) for key, value in group.attrs.items()})
        except OSError as error:
            attributes = {"unreadable": str(error)}
        lines.append(f"{path.name}: {attributes}")
    return "\n".join(lines) or f"no files in {folder}"


def test_the_quick_start_works_as_written(
    client: docker.DockerClient, images: list[str], tmp_path: Path
) -> None:
    busy = [port for port in PORTS if not port_is_free(port)]
    assert not busy, f"ports {busy} are in use: the demo stack (host network) needs them"
    checkout = fresh_copy(tmp_path / "stddaq")
    env = {key: value for key, value in os.environ.items() if key != "DOCKER_CONFIG"}
    script = "set -x\n" + quick_start_block()
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=checkout, env=env, capture_output=True, text=True, timeout=1200, check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"the quick start failed:\n{output[-8000:]}"
        record("quick start of docs/deployment.md in a fresh copy", f"{time.monotonic() - started:.0f} s")
        assert '"outcome":"file_saved"' in done.stdout, (
            f"the acquisition failed:\n{done.stdout[-2000:]}\n{close_reasons(checkout / 'data' / 'run1')}"
        )
        listed = done.stdout.split('"outcome":"file_saved"')[1].split()
        assert {"file.h5", "file0.h5", "file1.h5"} <= set(listed), f"ls data/run1 shows {listed}"
        check_images(checkout / "data" / "run1" / "file.h5", "stddaq-demo", (1024, 1024), 300)
        left = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"})
        assert not left, f"the quick start's last line leaves containers: {[c.name for c in left]}"
    finally:
        subprocess.run(
            ["docker", "compose", "--project-name", PROJECT, "--profile", "fake-camera", "down", "-v"],
            cwd=checkout, env={**env, "DOCKER_CONFIG": str(REPO / ".tools" / "docker")},
            capture_output=True, timeout=300, check=False,
        )
