"""Whole stacks on a real engine, in order: the demo stack of compose.yaml with its fake
camera, acquisitions checked pixel by pixel, a stopped writer, a crashed writer, a crashed
receiver, then a second detector deployed next to it by the Ansible playbook (twice: the
second run changes nothing), and at last a teardown that must leave nothing behind.

The tests of this module share the stacks and depend on their order (pytest keeps it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import yaml

from tests.compose.conftest import IMAGES, VERSION, record
from tests.compose.engine import (
    PROJECT_LABEL,
    REPO,
    ComposeProject,
    Driver,
    all_healthy,
    check_images,
    health_of,
    host_pid,
    ipc_namespace,
    port_is_free,
    wait_for,
)

DEMO = "stddaq-demo"
DEMO_SHAPE = (1024, 1024)
DEMO_PORTS = (5000, 8080, 9990, 20000)
RING_READERS = ("writer-0", "writer-1", "live-stream-0")

E2E = "stddaq-e2e"
E2E_SHAPE = (256, 512)
E2E_PORTS = {"rest": 5100, "ws": 8180, "camera": 9991, "live": 20100, "metrics_base": 9910}
"""The demo stack's metrics take 9710.. (compose.yaml); the e2e stack runs beside it."""
E2E_TOKEN = "e2e-token-not-secret"
E2E_PREFIX = "stddaq-e2e/"


@dataclass
class Stacks:
    """What the tests of this module share."""

    client: docker.DockerClient
    demo: ComposeProject
    demo_data: Path
    driver: Driver
    work: Path
    e2e: ComposeProject | None = None
    e2e_data: Path | None = None


def tool_env() -> dict[str, str]:
    """The environment for docker compose / ansible-playbook: the venv's tools first."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    return env


def data_folder(path: Path) -> Path:
    """A data folder the services' users can use (pytest's temporary folders are 0700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def stacks(
    client: docker.DockerClient, images: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stacks]:
    """The demo stack (compose.yaml, fake camera profile) up and healthy; torn down at the end."""
    busy = [port for port in DEMO_PORTS if not port_is_free(port)]
    if busy:
        pytest.fail(f"ports {busy} are in use on this host: the demo stack (host network) needs them")
    work = tmp_path_factory.mktemp("stacks")
    data = data_folder(work / "demo-data")
    env = tool_env()
    env["STDDAQ_DATA_DIR"] = str(data)
    demo = ComposeProject(DEMO, REPO, env, profiles=["fake-camera"])
    demo("down", "--volumes", "--remove-orphans", timeout=120)  # leftovers of an aborted run
    started = time.monotonic()
    demo("up", "--detach", "--wait", "--wait-timeout", "300", timeout=400)
    record("demo stack: `docker compose up` to all healthy", f"{time.monotonic() - started:.1f} s")
    shared = Stacks(client, demo, data, Driver("http://127.0.0.1:5000"), work)
    try:
        yield shared
    finally:
        demo("down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=300, check=False)
        if shared.e2e is not None:
            shared.e2e("down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=300, check=False)
        for image in IMAGES:
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(f"{E2E_PREFIX}{image}:{VERSION}")


def test_every_service_is_healthy_on_the_host_network(stacks: Stacks) -> None:
    containers = stacks.demo.containers(stacks.client)
    assert set(containers) == {"receiver", "driver", "writer-0", "writer-1", "live-stream-0", "fake-camera"}
    receiver = containers["receiver"]
    for name, container in containers.items():
        assert health_of(container) == "healthy", name
        host_config = container.attrs["HostConfig"]
        assert host_config["NetworkMode"] == "host", name
        assert host_config["RestartPolicy"]["Name"] == "unless-stopped", name
        assert host_config["ReadonlyRootfs"] is True, name
    assert receiver.attrs["HostConfig"]["IpcMode"] == "shareable"
    for name in RING_READERS:
        assert containers[name].attrs["HostConfig"]["IpcMode"] == f"container:{receiver.id}", name
        assert ipc_namespace(host_pid(containers[name])) == ipc_namespace(host_pid(receiver)), name
    networks = {network.name for network in stacks.client.networks.list()}
    assert networks <= {"host", "none"}, f"no bridge network may exist here: {networks}"
    uid = {name: Path(f"/proc/{host_pid(c)}/status").read_text() for name, c in containers.items()}
    for name, status in uid.items():
        real = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
        assert real, name
        assert real.group(1) == ("0" if name.startswith("writer-") else "10001"), name


def test_an_acquisition_records_every_image_exactly(stacks: Stacks) -> None:
    final, seconds = stacks.driver.record("/data/run-1", 300)
    assert final["outcome"] == "file_saved", final["last_error"]
    assert final["images_written"] == 300 and final["images_missing"] == 0
    assert final["master_file"] == "/data/run-1/file.h5"
    record(
        "demo stack: one acquisition of 300 images (2 MiB) at 100 Hz", f"{seconds:.1f} s start to file saved"
    )
    started = time.monotonic()
    check_images(stacks.demo_data / "run-1" / "file.h5", DEMO, DEMO_SHAPE, 300)
    check_images(stacks.demo_data / "run-1" / "file0.h5", DEMO, DEMO_SHAPE, 150)
    record("demo stack: pixel check of the 300 images (master file)", f"{time.monotonic() - started:.1f} s")


def test_files_are_written_as_the_requested_user(stacks: Stacks) -> None:
    run = stacks.demo_data / "run-uid"
    run.mkdir()
    os.chown(run, 4321, 4321)
    final, _ = stacks.driver.record("/data/run-uid", 10, writer_id=4321)
    assert final["outcome"] == "file_saved", final["last_error"]
    for name in ("file0.h5", "file1.h5", "file.h5"):
        assert (run / name).stat().st_uid == 4321, name
    check_images(run / "file.h5", DEMO, DEMO_SHAPE, 10)


def test_a_stopped_writer_is_reported_and_compose_up_brings_it_back(stacks: Stacks) -> None:
    containers = stacks.demo.containers(stacks.client)
    started = time.monotonic()
    containers["writer-1"].stop(timeout=30)
    containers["writer-1"].reload()
    assert containers["writer-1"].attrs["State"]["ExitCode"] == 0, "SIGTERM must stop the writer cleanly"
    record("demo stack: docker stop of a writer", f"{time.monotonic() - started:.1f} s, exit code 0")

    def writer_1_dead() -> bool:
        return not stacks.driver.status()["writers"][1]["alive"]

    wait_for("the driver to report writer 1 dead", writer_1_dead, 30)
    refused = stacks.driver.start(path="/data/run-refused", n_image=5)
    assert refused.status_code == 503, refused.text
    assert "writer" in refused.json()["detail"]
    assert stacks.demo.ps()["writer-1"]["State"] == "exited"

    started = time.monotonic()
    stacks.demo("up", "--detach", "--wait", "--wait-timeout", "300", timeout=400)
    record("demo stack: `docker compose up` after a stopped writer", f"{time.monotonic() - started:.1f} s")
    assert stacks.driver.status()["writers"][1]["alive"]
    final, _ = stacks.driver.record("/data/run-2", 20)
    assert final["outcome"] == "file_saved" and final["images_written"] == 20


def crash(stacks: Stacks, service: str) -> dict[str, int]:
    """SIGKILL a service's PID 1 from the host (a crash, not a `docker stop`); the restart
    counts of every container before it."""
    containers = stacks.demo.containers(stacks.client)
    counts = {name: int(c.attrs["RestartCount"]) for name, c in containers.items()}
    os.kill(host_pid(containers[service]), signal.SIGKILL)
    return counts


def restarted_and_healthy(stacks: Stacks, before: dict[str, int], services: tuple[str, ...]) -> bool:
    """True once these services restarted (restart policy) and every container is healthy."""
    containers = stacks.demo.containers(stacks.client)
    for container in containers.values():
        container.reload()
    again = all(int(containers[s].attrs["RestartCount"]) > before[s] for s in services)
    return again and all_healthy(list(containers.values()))


def test_a_crashed_writer_is_restarted_by_its_restart_policy(stacks: Stacks) -> None:
    before = crash(stacks, "writer-0")
    seconds = wait_for(
        "writer-0 to restart and be healthy",
        lambda: restarted_and_healthy(stacks, before, ("writer-0",)),
        180,
    )
    record("demo stack: writer crash (SIGKILL) to healthy again", f"{seconds:.1f} s")
    final, _ = stacks.driver.record("/data/run-3", 50)
    assert final["outcome"] == "file_saved", final["last_error"]
    check_images(stacks.demo_data / "run-3" / "file.h5", DEMO, DEMO_SHAPE, 50)


def test_a_crashed_receiver_restarts_and_takes_the_ring_readers_along(stacks: Stacks) -> None:
    before = crash(stacks, "receiver")
    seconds = wait_for(
        "the receiver and the ring readers to restart and be healthy",
        lambda: restarted_and_healthy(stacks, before, ("receiver", *RING_READERS)),
        300,
    )
    record("demo stack: receiver crash (SIGKILL) to healthy again", f"{seconds:.1f} s")
    containers = stacks.demo.containers(stacks.client)
    receiver_ipc = ipc_namespace(host_pid(containers["receiver"]))
    for name in RING_READERS:
        assert ipc_namespace(host_pid(containers[name])) == receiver_ipc, f"{name} is in a stale namespace"
    assert int(containers["driver"].attrs["RestartCount"]) == before["driver"], "the driver needs no restart"
    final, _ = stacks.driver.record("/data/run-4", 50)
    assert final["outcome"] == "file_saved", final["last_error"]
    check_images(stacks.demo_data / "run-4" / "file.h5", DEMO, DEMO_SHAPE, 50)


def write_image_archives(stacks: Stacks, folder: Path) -> None:
    """The archives the role transfers, under the test's own image names (stddaq-e2e/...):
    the engine lacks those names, so the playbook must copy and load every archive."""
    folder.mkdir()
    for image in IMAGES:
        source = stacks.client.images.get(f"stddaq/{image}:{VERSION}")
        name = f"{E2E_PREFIX}{image}:{VERSION}"
        source.tag(f"{E2E_PREFIX}{image}", VERSION)
        with open(folder / f"{image}-{VERSION}.tar", "wb") as archive:
            for chunk in stacks.client.images.get(name).save(named=True):
                archive.write(chunk)
        (folder / f"{image}-{VERSION}.id").write_text(source.id + "\n")
        stacks.client.images.remove(name)  # only the name: stddaq/<image> keeps the image


def write_inventory(stacks: Stacks, folder: Path, data: Path, archives: Path) -> Path:
    """A one-server inventory: this machine, with the e2e detector and its fake camera."""
    inventory = folder / "inventory"
    (inventory / "host_vars").mkdir(parents=True)
    hosts = {
        "daq_servers": {
            "hosts": {"localhost": {"ansible_connection": "local"}},
            "vars": {
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                "stddaq_root": str(folder / "opt-stddaq"),
                "stddaq_image_prefix": E2E_PREFIX,
                "stddaq_image_archive_dir": str(archives),
            },
        }
    }
    detector = {
        "name": E2E,
        "camera_address": f"tcp://127.0.0.1:{E2E_PORTS['camera']}",
        "rest_port": E2E_PORTS["rest"],
        "ws_port": E2E_PORTS["ws"],
        "metrics_port_base": E2E_PORTS["metrics_base"],
        "data_source": str(data),
        "data_dir": "/data",
        "driver_token": E2E_TOKEN,
        "fake_camera": {"port": E2E_PORTS["camera"], "rate_hz": 50},
        "config": {
            "detector_type": "pco",
            "n_modules": 1,
            "bit_depth": 16,
            "image_pixel_height": E2E_SHAPE[0],
            "image_pixel_width": E2E_SHAPE[1],
            "start_udp_port": 0,
            "module_positions": {},
            "number_of_writers": 1,
            "live_stream_configs": {
                f"tcp://127.0.0.1:{E2E_PORTS['live']}": {"type": "forward", "config": [1, 1]}
            },
        },
    }
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inventory / "host_vars" / "localhost.yml").write_text(yaml.safe_dump({"stddaq_detectors": [detector]}))
    return inventory


def run_playbook(inventory: Path) -> tuple[dict[str, int], float]:
    """ansible-playbook site.yml on the inventory; the PLAY RECAP counts of localhost."""
    env = tool_env()
    env["ANSIBLE_NOCOLOR"] = "1"
    started = time.monotonic()
    done = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), "site.yml"],
        cwd=REPO / "ansible",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
    recap = re.search(r"^localhost\s*:\s*(.*)$", done.stdout, re.MULTILINE)
    assert recap, done.stdout[-3000:]
    counts = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", recap.group(1))}
    return counts, seconds


def test_ansible_deploys_a_second_detector_next_to_the_first(stacks: Stacks) -> None:
    busy = [port for port in E2E_PORTS.values() if not port_is_free(port)]
    assert not busy, f"ports {busy} are in use on this host: the e2e detector needs them"
    folder = stacks.work / "ansible"
    folder.mkdir()
    archives = folder / "archives"
    started = time.monotonic()
    write_image_archives(stacks, archives)
    record("ansible: docker save of the 5 images", f"{time.monotonic() - started:.1f} s")
    data = data_folder(folder / "e2e-data")
    inventory = write_inventory(stacks, folder, data, archives)
    stacks.e2e = ComposeProject(E2E, folder / "opt-stddaq" / E2E, tool_env(), profiles=["fake-camera"])
    stacks.e2e_data = data

    first, seconds = run_playbook(inventory)
    assert first["failed"] == 0 and first["changed"] > 0, first
    record("ansible: first run (copy + load 5 images, render, up, healthy)", f"{seconds:.1f} s, {first}")
    second, seconds = run_playbook(inventory)
    assert second["changed"] == 0 and second["failed"] == 0, f"the second run changed something: {second}"
    record("ansible: second run (idempotent)", f"{seconds:.1f} s, {second}")

    e2e = stacks.e2e.containers(stacks.client)
    assert set(e2e) == {"receiver", "driver", "writer-0", "live-stream-0", "fake-camera"}
    assert all_healthy(list(e2e.values()))
    assert all_healthy(list(stacks.demo.containers(stacks.client).values())), "the first stack suffered"
    for service, container in e2e.items():
        image = re.sub(r"-\d+$", "", service)
        assert container.attrs["Config"]["Image"] == f"{E2E_PREFIX}{image}:{VERSION}", service
    config = json.loads((folder / "opt-stddaq" / E2E / f"{E2E}.json").read_text())
    assert config["detector_name"] == E2E and config["ipc_dir"] == "/run/stddaq"


def test_the_second_detector_records_with_its_token(stacks: Stacks) -> None:
    assert stacks.e2e_data is not None, "the Ansible deployment did not run"
    driver = Driver(f"http://127.0.0.1:{E2E_PORTS['rest']}")
    refused = driver.start(path="/data/run-1", n_image=10)
    assert refused.status_code == 401, refused.text
    driver.token = E2E_TOKEN
    final, seconds = driver.record("/data/run-1", 100)
    assert final["outcome"] == "file_saved", final["last_error"]
    assert final["master_file"] is None, "one writer: no master file"
    record("e2e stack: one acquisition of 100 images (256 KiB) at 50 Hz", f"{seconds:.1f} s")
    check_images(stacks.e2e_data / "run-1" / "file0.h5", E2E, E2E_SHAPE, 100)
    demo_final, _ = stacks.driver.record("/data/run-5", 20)
    assert demo_final["outcome"] == "file_saved", "the demo stack records at the same time"


def test_teardown_leaves_no_container_volume_or_shared_memory(stacks: Stacks) -> None:
    projects = [stacks.demo] + ([stacks.e2e] if stacks.e2e else [])
    started = time.monotonic()
    for project in projects:
        project("down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=300)
    record("teardown: `docker compose down --volumes` of both stacks", f"{time.monotonic() - started:.1f} s")
    client = stacks.client
    for project in projects:
        left = client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project.name}"})
        assert not left, f"containers left by {project.name}: {[c.name for c in left]}"
        volumes = client.volumes.list(filters={"label": f"{PROJECT_LABEL}={project.name}"})
        assert not volumes, f"volumes left by {project.name}: {[v.name for v in volumes]}"
    names = {DEMO, E2E}
    segments = [entry for entry in os.listdir("/dev/shm") if entry.split("-image")[0] in names]
    assert not segments, f"shared-memory segments left in the host's /dev/shm: {segments}"
    root = client.info()["DockerRootDir"]
    with open("/proc/mounts") as mounts:
        shm_mounts = [line for line in mounts if f"{root}/containers/" in line and "/mounts/shm" in line]
    assert not shm_mounts, f"container /dev/shm mounts left: {shm_mounts}"
    with open("/proc/mounts") as mounts:
        volume_mounts = [line for line in mounts if any(f"{root}/volumes/{n}_" in line for n in names)]
    assert not volume_mounts, f"volume mounts left: {volume_mounts}"
