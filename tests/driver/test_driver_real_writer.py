"""End to end with real processes: ring + metadata (this test) -> driver -> real writers -> HDF5.

The test process owns the ring and publishes the metadata, as the receiver would; the
driver and the writers (`python -m stddaq_writer CONFIG --index k`) are subprocesses.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reading)
import numpy as np
import pytest

from stddaq_common.config.model import load_config
from stddaq_common.names import shm_name
from stddaq_common.ring.geometry import ring_geometry
from stddaq_common.ring.image_ring import ImageRing
from tests.driver.harness import (
    DEADLINE_S,
    DriverProcess,
    Producer,
    short_tmp_dir,
    unique_detector,
    wait_until,
    write_config,
)

HEIGHT, WIDTH = 32, 48

stddaq_writer_process = pytest.importorskip("stddaq_writer.writer_process")


def frame(image_id: int) -> np.ndarray:
    """A frame whose every pixel depends on its id (pixel-exact checks)."""
    base = np.arange(HEIGHT * WIDTH, dtype=np.uint32).reshape(HEIGHT, WIDTH)
    return ((base * 7 + image_id * 13) % 65521).astype(np.uint16)


@dataclass
class RealSystem:
    detector: str
    root: Path
    ring: ImageRing
    producer: Producer
    driver: DriverProcess
    writers: list[subprocess.Popen[bytes]]
    ids: Iterator[int]

    def produce(self, count: int, skip: frozenset[int] = frozenset()) -> list[int]:
        """Write `count` frames into the ring and publish them; returns the ids published."""
        published = []
        for position in range(count):
            image_id = next(self.ids)
            if position in skip:
                continue
            self.ring.write(image_id, frame(image_id))
            self.producer.publish(image_id)
            published.append(image_id)
        return published

    def acquire(self, *, make_dir: bool = True, **body: object) -> int:
        """Start over REST (creating the directory first: writers never create one)."""
        if make_dir:
            os.makedirs(str(body["path"]), exist_ok=True)
        response = self.driver.http.post("/start", json=body)
        assert response.status_code == 200, response.text
        self.driver.wait_for_state("waiting_for_first_image", "error", "idle")
        acq_id: int = response.json()["acquisition_id"]
        return acq_id


def _start_system(n_writers: int) -> tuple[RealSystem, Path]:
    base = short_tmp_dir()
    root = base / "data"
    root.mkdir()
    detector = unique_detector()
    config_path = write_config(
        base, detector, number_of_writers=n_writers,
        image_pixel_height=HEIGHT, image_pixel_width=WIDTH,
    )
    config = load_config(config_path)
    ring = ImageRing.create(shm_name(detector), ring_geometry(config))
    producer = Producer(detector, base / "ipc", HEIGHT, WIDTH)
    env = {key: value for key, value in os.environ.items() if not key.startswith("STDDAQ_")}
    writers = [
        subprocess.Popen(
            [sys.executable, "-m", "stddaq_writer", str(config_path), "--index", str(k),
             "--disk-reserve-mb", "1"],
            stdout=subprocess.DEVNULL, stderr=open(base / f"writer{k}.log", "wb"), env=env,  # noqa: SIM115
        )
        for k in range(n_writers)
    ]
    driver = DriverProcess(config_path, root)
    system = RealSystem(detector, root, ring, producer, driver, writers, itertools.count(1))
    driver.wait_writers_alive()
    return system, base


def _stop_system(system: RealSystem, base: Path) -> None:
    status = system.driver.stop()
    for writer in system.writers:
        if writer.poll() is None:
            os.kill(writer.pid, signal.SIGTERM)
            try:
                writer.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                os.kill(writer.pid, signal.SIGKILL)
                writer.wait(DEADLINE_S)
    system.producer.close()
    system.ring.close()
    log = system.driver.log()
    shutil.rmtree(base, ignore_errors=True)
    assert status == 0, log


@pytest.fixture(scope="module")
def one_writer() -> Iterator[RealSystem]:
    system, base = _start_system(1)
    try:
        yield system
    finally:
        _stop_system(system, base)


def test_n_image_into_a_real_file_pixel_exact(one_writer: RealSystem) -> None:
    system = one_writer
    acq_id = system.acquire(path=f"{system.root}/run", n_image=6)
    published = system.produce(9, skip=frozenset({2}))
    status = system.driver.wait_idle_after(acq_id)
    assert status["outcome"] == "file_saved", status["last_error"]
    assert (status["images_written"], status["id_gaps"]) == (6, 1)
    with h5py.File(status["files"][0], "r") as file:
        data = file[f"/{system.detector}/data"]
        ids = file[f"/{system.detector}/metadata"]["image_id"]
        assert data.shape == (6, HEIGHT, WIDTH)
        assert list(ids) == published[:6]
        for position, image_id in enumerate(published[:6]):
            np.testing.assert_array_equal(data[position], frame(image_id))


def test_a_directory_that_cannot_be_made_is_an_error_and_the_next_acquisition_works(
    one_writer: RealSystem,
) -> None:
    system = one_writer
    (system.root / "plain-file").write_bytes(b"not a directory")
    failed = system.acquire(path=f"{system.root}/plain-file/run", make_dir=False)
    status = system.driver.wait_idle_after(failed)
    assert status["outcome"] == "error"
    assert "Not a directory" in status["last_error"], status["last_error"]

    acq_id = system.acquire(
        path=f"{system.root}/new/run/dir", compression="bitshuffle_lz4", make_dir=False
    )
    published = system.produce(4)
    wait_until(lambda: system.driver.status()["images_written"] == 4, "4 images written")
    assert system.driver.http.post("/stop").status_code == 202
    status = system.driver.wait_idle_after(acq_id)
    assert status["outcome"] == "file_saved", status
    with h5py.File(status["files"][0], "r") as file:
        data = file[f"/{system.detector}/data"]
        assert data.shape == (4, HEIGHT, WIDTH)
        for position, image_id in enumerate(published):
            np.testing.assert_array_equal(data[position], frame(image_id))


def test_three_real_writers_and_the_master_file() -> None:
    system, base = _start_system(3)
    try:
        acq_id = system.acquire(path=f"{system.root}/three", n_image=7)
        published = system.produce(7)
        status = system.driver.wait_idle_after(acq_id)
        assert status["outcome"] == "file_saved", status["last_error"]
        assert status["master_file"] == f"{system.root}/three/file.h5"
        with h5py.File(status["master_file"], "r") as master:
            data = master[f"/{system.detector}/data"]
            assert data.shape == (7, HEIGHT, WIDTH)
            for position, image_id in enumerate(published):
                np.testing.assert_array_equal(data[position], frame(image_id))
    finally:
        _stop_system(system, base)


def test_a_burst_reaches_two_real_writers_in_order_pixel_exact() -> None:
    """Images published faster than one wake-up each are dealt from the subscriber's queue
    together (RecordImages to these stddaq writers): every image lands once, in its
    round-robin place, pixel-exact, and n_image stops at exactly 120."""
    system, base = _start_system(2)
    try:
        acq_id = system.acquire(path=f"{system.root}/burst", n_image=120)
        published = system.produce(150)
        status = system.driver.wait_idle_after(acq_id)
        assert status["outcome"] == "file_saved", status["last_error"]
        assert (status["images_dealt"], status["images_written"]) == (120, 120)
        for writer, path in enumerate(status["files"]):
            expected = published[writer:120:2]
            with h5py.File(path, "r") as file:
                data = file[f"/{system.detector}/data"]
                assert list(file[f"/{system.detector}/metadata"]["image_id"]) == expected
                for position, image_id in enumerate(expected):
                    np.testing.assert_array_equal(data[position], frame(image_id))
    finally:
        _stop_system(system, base)
