"""Whole stacks on a real engine, in order: the demo stack of compose.yaml with its fake
camera, acquisitions checked pixel by pixel, a stopped writer, a crashed writer, a crashed
receiver, `docker kill` of every service mid-acquisition, then a second detector deployed
next to it by the Ansible playbook (twice: the second run changes nothing), and at last a
teardown that must leave nothing behind.

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
from typing import Any

import docker
import h5py
import httpx
import numpy as np
import pytest
import yaml
from docker.models.containers import Container

from stddaq_fake_camera.frames import FramePattern
from tests.compose.conftest import IMAGES, VERSION, record
from tests.compose.engine import (
    PROJECT_LABEL,
    REPO,
    ComposeProject,
    Driver,
    all_healthy,
    check_images,
    check_saved,
    docker_socket,
    health_of,
    host_pid,
    port_is_free,
    wait_for,
)

DEMO = "stddaq-demo"
DEMO_PROJECT = "checkout-stddaq-demo"
DEMO_SHAPE = (1024, 1024)
DEMO_PORTS = (5000, 8080, 8090, 9990, 20000)
RING_READERS = ("writer-0", "writer-1", "live-stream-0")

E2E = "stddaq-e2e"
E2E_SITE = "test"
E2E_PROJECT = f"{E2E_SITE}-{E2E}"
E2E_USER = 1234
E2E_SHAPE = (256, 512)
E2E_PORTS = {"rest": 5100, "ws": 8180, "camera": 9991, "live": 20100, "metrics_base": 9910, "web": 8190}
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
    """The demo stack (compose.yaml, fake camera profile) up and healthy; torn down at the
    end, also when `compose up` failed (a stack left half up would hold the host ports the
    later tests and runs need)."""
    work = tmp_path_factory.mktemp("stacks")
    data = data_folder(work / "demo-data")
    env = tool_env()
    env["STDDAQ_DATA_DIR"] = str(data)
    env["STDDAQ_DOCKER_SOCKET"] = docker_socket()
    demo = ComposeProject(DEMO_PROJECT, REPO, env, profiles=["fake-camera"])
    demo("down", "--volumes", "--remove-orphans", timeout=120)  # leftovers of an aborted run
    busy = [port for port in DEMO_PORTS if not port_is_free(port)]
    if busy:
        pytest.fail(f"ports {busy} are in use on this host: the demo stack (host network) needs them")
    shared = Stacks(client, demo, data, Driver("http://127.0.0.1:5000"), work)
    try:
        started = time.monotonic()
        demo("up", "--detach", "--wait", "--wait-timeout", "300", timeout=400)
        record("demo stack: `docker compose up` to all healthy", f"{time.monotonic() - started:.1f} s")
        yield shared
    finally:
        demo("down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=300, check=False)
        if shared.e2e is not None:
            shared.e2e("down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=300, check=False)
        for image in IMAGES:
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(f"{E2E_PREFIX}{image}:{VERSION}")


SERVICES = {
    "receiver",
    "driver",
    "writer-0",
    "writer-1",
    "live-stream-0",
    "web",
    "fake-camera",
    "keeper-1",
    "keeper-2",
}
COMMANDS = {
    "receiver": "stddaq-receiver",
    "driver": "stddaq-driver",
    "writer-0": "stddaq-writer",
    "writer-1": "stddaq-writer",
    "live-stream-0": "stddaq-live-str",  # command names are cut at 15 characters
    "fake-camera": "stddaq-fake-cam",
    "web": "stddaq-web",
    "keeper-1": "stddaq-keeper",
    "keeper-2": "stddaq-keeper",
}


def test_every_service_is_healthy_on_the_host_network(stacks: Stacks) -> None:
    containers = stacks.demo.containers(stacks.client)
    assert set(containers) == SERVICES
    for name, container in containers.items():
        assert health_of(container) == "healthy", name
        host_config = container.attrs["HostConfig"]
        assert host_config["NetworkMode"] == "host", name
        assert host_config["RestartPolicy"]["Name"] == "unless-stopped", name
        assert host_config["ReadonlyRootfs"] is True, name
        comm = Path(f"/proc/{host_pid(container)}/comm").read_text().strip()
        assert comm == COMMANDS[name], f"{name} shows as {comm!r} in ps"
    ring_volume = f"{DEMO_PROJECT}_ring"
    for name in ("receiver", *RING_READERS):
        mounts = {m["Destination"]: m for m in containers[name].attrs["Mounts"]}
        assert mounts["/dev/shm"].get("Name") == ring_volume, f"{name}: /dev/shm is not the ring volume"
        assert containers[name].attrs["HostConfig"]["IpcMode"] == "private", name
    networks = {network.name for network in stacks.client.networks.list()}
    assert networks <= {"host", "none"}, f"no bridge network may exist here: {networks}"
    uid = {name: Path(f"/proc/{host_pid(c)}/status").read_text() for name, c in containers.items()}
    for name, status in uid.items():
        real = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
        assert real, name
        as_root = name.startswith(("writer-", "keeper-"))
        assert real.group(1) == ("0" if as_root else "10001"), name


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


def test_a_crashed_receiver_restarts_and_takes_the_ring_over_in_place(stacks: Stacks) -> None:
    before = crash(stacks, "receiver")
    seconds = wait_for(
        "the receiver to restart and every service to be healthy",
        lambda: restarted_and_healthy(stacks, before, ("receiver",)),
        300,
    )
    record("demo stack: receiver crash (SIGKILL) to healthy again", f"{seconds:.1f} s")
    containers = stacks.demo.containers(stacks.client)
    for name in (*RING_READERS, "driver"):
        assert int(containers[name].attrs["RestartCount"]) == before[name], f"{name} needed no restart"
    final, _ = stacks.driver.record("/data/run-4", 50)
    assert final["outcome"] == "file_saved", final["last_error"]
    check_images(stacks.demo_data / "run-4" / "file.h5", DEMO, DEMO_SHAPE, 50)


@dataclass(frozen=True)
class KillCase:
    """What `docker kill` of one service mid-acquisition must end in."""

    service: str
    outcome: str
    error: str | None
    """A part of `last_error` that names the service (None: the acquisition goes on)."""


KILLS = [
    # The ring outlives the receiver (a volume): the new one takes it over in place and
    # publishes on; the camera's backlog may overrun the writers (status 0, counted).
    KillCase("receiver", "file_saved", None),
    KillCase("live-stream-0", "file_saved", None),
    KillCase("keeper-1", "file_saved", None),  # the other keeper starts it again
    KillCase("writer-1", "error", "writer 1"),
    KillCase("driver", "error", "the driver restarted during acquisition"),
    # The camera starts again at id 0: the driver ends the acquisition naming the source.
    KillCase("fake-camera", "error", "the image source restarted"),
]


def status_or_none(driver: Driver) -> dict[str, Any] | None:
    """The driver's status, None while it does not answer (killed, starting)."""
    try:
        return driver.status()
    except httpx.HTTPError:
        return None


def started_at(container: Container) -> str:
    """When the container's current process started (changes on every start)."""
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


@pytest.mark.parametrize("case", KILLS, ids=[case.service for case in KILLS])
def test_docker_kill_of_a_service_mid_acquisition(stacks: Stacks, case: KillCase) -> None:
    driver = stacks.driver
    containers = stacks.demo.containers(stacks.client)
    victim = containers[case.service]
    first_start = started_at(victim)
    run = f"/data/kill-{case.service}"
    answer = driver.start(path=run)
    assert answer.status_code == 200, answer.text
    acquisition_id = answer.json()["acquisition_id"]
    wait_for("100 images written", lambda: driver.status()["images_written"] >= 100, 120, period=0.1)
    dealt_at_kill = driver.status()["images_dealt"]
    victim.kill()  # SIGKILL through the engine: a manual stop for Docker's restart policy
    killed = time.monotonic()
    final: dict[str, Any] = {}

    def back_and_healthy() -> bool:
        now = stacks.demo.containers(stacks.client)
        return started_at(now[case.service]) != first_start and all_healthy(list(now.values()))

    def ended() -> bool:
        nonlocal final
        status = status_or_none(driver)
        if status is None or status["acquisition_id"] != acquisition_id:
            return False
        final = status
        return status["outcome"] is not None and not status["busy"]

    if case.outcome == "file_saved":
        # Goes on: 100 more images dealt after the kill (for the receiver: published by
        # its new process), then stopped; the stack must be healthy again on its own.
        wait_for(
            "the acquisition to go on after the kill",
            lambda: driver.status()["images_dealt"] >= dealt_at_kill + 100,
            300,
            period=0.1,
        )
        stopped = httpx.post(f"{driver.url}/api/v1/stop", timeout=30)
        assert stopped.status_code == 202, stopped.text
        wait_for(f"acquisition {acquisition_id} to end", ended, 300, period=0.2)
    wait_for(f"{case.service} to be started again and the stack healthy", back_and_healthy, 300)
    healthy_after = time.monotonic() - killed
    record(f"docker kill of {case.service} mid-acquisition to healthy again", f"{healthy_after:.1f} s")
    wait_for(f"acquisition {acquisition_id} to end", ended, 120, period=0.2)
    assert final["outcome"] == case.outcome, final["last_error"]
    if case.error is None:
        assert final["last_error"] is None, final["last_error"]
        master = stacks.demo_data / run.removeprefix("/data/") / "file.h5"
        written, missing = check_saved(master, DEMO, DEMO_SHAPE)
        assert written == final["images_written"] and written > 0
        assert missing == final["images_not_written"]
    else:
        assert case.error in (final["last_error"] or ""), final["last_error"]
    if case.service.startswith("writer-"):
        # Its new process cleared the open-for-write flags of the file the killed one held.
        left = stacks.demo_data / run.removeprefix("/data/") / f"file{case.service.split('-')[1]}.h5"
        with h5py.File(left, "r") as file:
            assert file[f"{DEMO}/data"].shape[0] > 0, "the flushed images are in the file"
        leftovers = [p.name for p in left.parent.iterdir() if p.name.endswith(".reserve")]
        assert not leftovers, f"disk reserves left: {leftovers}"
        # A master file over what the files hold, marked incomplete, naming the writer.
        assert "marked incomplete" in final["last_error"], final["last_error"]
        check_incomplete_master(left.parent / "file.h5", case.error or "")
    record(
        f"docker kill of {case.service}: acquisition",
        f"{final['outcome']}, {final['images_written']} written, {final['images_missing']} missing, "
        f"ended {time.monotonic() - killed:.1f} s after the kill",
    )
    after, _ = driver.record(f"/data/after-kill-{case.service}", 30)
    assert after["outcome"] == "file_saved", after["last_error"]
    assert after["acquisition_id"] > acquisition_id, "acquisition ids must never repeat"
    check_images(stacks.demo_data / f"after-kill-{case.service}" / "file.h5", DEMO, DEMO_SHAPE, 30)


def check_incomplete_master(path: Path, names: str) -> None:
    """The master file of an acquisition that lost a writer: `complete` False with a
    reason naming it, every image recorded as written (status 1) the camera's frame of its
    id, ids increasing; the entries no file holds are status 0 and zeros."""
    pattern = FramePattern(DEMO_SHAPE, np.dtype("<u2"))
    with h5py.File(path, "r") as file:
        assert file.attrs["complete"] == False  # noqa: E712 (a numpy bool)
        assert names in str(file.attrs["incomplete_reason"]), file.attrs["incomplete_reason"]
        data, metadata = file[f"{DEMO}/data"], np.asarray(file[f"{DEMO}/metadata"])
        written = metadata["status"] == 1
        assert written.any() and np.all(np.diff(metadata["image_id"][written].astype(np.int64)) > 0)
        records = zip(metadata["image_id"], metadata["status"], strict=True)
        for index, (image_id, status) in enumerate(records):
            if status == 1:
                assert np.array_equal(data[index], pattern.frame(int(image_id))), f"{path}: image {image_id}"
            elif status == 0:
                assert not data[index].any(), f"{path}[{index}]: status 0 but not zeros"


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
                "stddaq_site": E2E_SITE,
                "stddaq_keeper_socket": docker_socket(),
            },
        }
    }
    detector = {
        "name": E2E,
        "camera_address": f"tcp://127.0.0.1:{E2E_PORTS['camera']}",
        "rest_port": E2E_PORTS["rest"],
        "ws_port": E2E_PORTS["ws"],
        "metrics_port_base": E2E_PORTS["metrics_base"],
        "web_port": E2E_PORTS["web"],
        "data_source": str(data),
        "data_dir": "/data",
        "data_owner": str(E2E_USER),
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
    project_dir = folder / "opt-stddaq" / E2E
    stacks.e2e = ComposeProject(E2E_PROJECT, project_dir, tool_env(), profiles=["fake-camera"])
    stacks.e2e_data = data

    first, seconds = run_playbook(inventory)
    assert first["failed"] == 0 and first["changed"] > 0, first
    record("ansible: first run (copy + load 5 images, render, up, healthy)", f"{seconds:.1f} s, {first}")
    second, seconds = run_playbook(inventory)
    assert second["changed"] == 0 and second["failed"] == 0, f"the second run changed something: {second}"
    record("ansible: second run (idempotent)", f"{seconds:.1f} s, {second}")

    e2e = stacks.e2e.containers(stacks.client)
    assert set(e2e) == {
        "receiver", "driver", "writer-0", "live-stream-0", "web", "fake-camera", "keeper-1", "keeper-2"
    }
    assert all_healthy(list(e2e.values()))
    assert all_healthy(list(stacks.demo.containers(stacks.client).values())), "the first stack suffered"
    assert data.stat().st_uid == E2E_USER, "the role makes the data folder the configured user's"
    for service, container in e2e.items():
        image = "driver" if service.startswith("keeper") else re.sub(r"-\d+$", "", service)
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
    as_user, _ = driver.record("/data/run-as-user", 10, writer_id=E2E_USER)
    assert as_user["outcome"] == "file_saved", as_user["last_error"]
    assert (stacks.e2e_data / "run-as-user" / "file0.h5").stat().st_uid == E2E_USER
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
    projects_names = {DEMO_PROJECT, E2E_PROJECT}
    segments = [entry for entry in os.listdir("/dev/shm") if entry.split("-image")[0] in names]
    assert not segments, f"shared-memory segments left in the host's /dev/shm: {segments}"
    root = client.info()["DockerRootDir"]
    with open("/proc/mounts") as mounts:
        shm_mounts = [line for line in mounts if f"{root}/containers/" in line and "/mounts/shm" in line]
    assert not shm_mounts, f"container /dev/shm mounts left: {shm_mounts}"
    with open("/proc/mounts") as mounts:
        volume_mounts = [
            line for line in mounts if any(f"{root}/volumes/{n}_" in line for n in projects_names)
        ]
    assert not volume_mounts, f"volume mounts left: {volume_mounts}"
