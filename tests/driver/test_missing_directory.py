"""A start into a directory that does not exist (docs/control-api.md, "Missing directories"):
the driver accepts it, the writer creates every missing level as the user the files are
written as, mode 0775 less the writer's umask, and records into it; nothing is created
outside the allowed roots or before a start is accepted."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import h5py
import numpy as np
import pytest

from tests.driver.test_driver_real_writer import RealSystem, _start_system, _stop_system, frame

UMASK = 0o002


@pytest.fixture(scope="module")
def system() -> Iterator[RealSystem]:
    previous = os.umask(UMASK)  # the writers inherit it
    try:
        started, base = _start_system(1)
    finally:
        os.umask(previous)
    try:
        yield started
    finally:
        _stop_system(started, base)


def test_missing_levels_are_created_with_the_documented_mode(system: RealSystem) -> None:
    target = system.root / "p1234" / "scan_007"
    assert not (system.root / "p1234").exists()
    acq_id = system.acquire(path=str(target), n_image=3, make_dir=False)
    published = system.produce(3)
    status = system.driver.wait_idle_after(acq_id)
    assert status["outcome"] == "file_saved", status["last_error"]
    for level in (system.root / "p1234", target):
        info = level.stat()
        assert stat.S_ISDIR(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o775 & ~UMASK, oct(info.st_mode)
        assert info.st_uid == os.stat(status["files"][0]).st_uid
    with h5py.File(status["files"][0], "r") as file:
        data = file[f"/{system.detector}/data"]
        for position, image_id in enumerate(published):
            np.testing.assert_array_equal(data[position], frame(image_id))


def test_a_refused_start_creates_nothing(system: RealSystem) -> None:
    response = system.driver.http.post("/start", json={"path": str(system.root / "x" / "y"),
                                                       "n_image": "3"})
    assert response.status_code == 422
    outside = system.root.parent / "outside-root" / "run"
    response = system.driver.http.post("/start", json={"path": str(outside)})
    assert response.status_code == 403
    assert not (system.root / "x").exists()
    assert not outside.parent.exists()
    assert system.driver.status()["state"] == "idle"
