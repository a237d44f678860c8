"""The shared-memory image ring across real processes and real /dev/shm segments."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stddaq_common.cli import main as stddaq_main
from stddaq_common.config.model import DaqConfig, parse_config
from stddaq_common.ring.geometry import RingGeometry, ram_buffer_warning, ring_geometry
from stddaq_common.ring.image_ring import ImageRing, RingError, RingOwnerExists, RingResized, SlotBusy
from tests.common.configs import pco_config
from tests.common.ring_child import fill_frame, make_frame

CHILD_SCRIPT = Path(__file__).with_name("ring_child.py")
SHM = "/dev/shm"
DEADLINE_S = 60.0
"""Generous: the machine has 2 shared, noisy cores."""

RACE_DEADLINE_S = 600.0
"""Bound on a race test that runs until its race happened enough times: only stops a hang."""
WRITER_PAUSE_S = 0.1
"""Longest rest of a threads-writer thread after a frame (its slot then holds a whole frame)."""

MIB = 1024 * 1024


class Child:
    """A ring_child.py process; its stdout is read line by line with a deadline."""

    def __init__(self, *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD_SCRIPT), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        self._pending = b""

    def wait_line(self, prefix: str, timeout: float = DEADLINE_S) -> str:
        """The first stdout line starting with `prefix` (fails if the child exits first)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._pending:
                raw, _, self._pending = self._pending.partition(b"\n")
                line = raw.decode()
                if line.startswith(prefix):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise AssertionError(f"child {self.pid} did not print {prefix!r}: {self.stderr()}")
            readable, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if readable:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    code = self.proc.wait()
                    raise AssertionError(
                        f"child {self.pid} exited ({code}) before {prefix!r}: {self.stderr()}"
                    )
                self._pending += chunk

    def finish(self) -> int:
        """Close its stdin (the signal to close the ring and exit); its exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=DEADLINE_S)

    def kill(self) -> None:
        """SIGKILL it (a crash) if it still runs, and reap it."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE_S)

    def stderr(self) -> str:
        """Its stderr (only after it exited)."""
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Children started by a test; every one is killed (by pid) and reaped afterwards."""
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()
        for stream in (child.proc.stdin, child.proc.stdout, child.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@pytest.fixture
def ring_name() -> Iterator[str]:
    """A unique ring name; its segments (and temp files) are removed afterwards."""
    name = f"test-ring-{uuid.uuid4().hex[:12]}"
    yield name
    leftovers = [f"{SHM}/{name}", f"{SHM}/{name}.stddaq", *glob.glob(f"{SHM}/.{name}.*")]
    for path in leftovers:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def spawn(children: list[Child], *args: object) -> Child:
    """Start a ring_child.py process tracked by the `children` fixture."""
    child = Child(*args)
    children.append(child)
    return child


def segment_files(name: str) -> list[str]:
    """Which of the ring's two /dev/shm files exist."""
    return [p for p in (f"{SHM}/{name}", f"{SHM}/{name}.stddaq") if os.path.exists(p)]


# ---------------------------------------------------------------------- layout


def test_data_segment_has_std_daq_layout(ring_name: str) -> None:
    """Size rounded up to 2 MiB; image id at (id % n_slots) x slot_bytes, readable raw."""
    geometry = RingGeometry(slot_bytes=3000, n_slots=7)
    with ImageRing.create(ring_name, geometry) as ring:
        assert os.path.getsize(f"{SHM}/{ring_name}") == 2 * MIB
        ids = [0, 6, 7, 20, 2**32 + 5, 2**63 + 11, 2**64 - 1]
        for image_id in ids:
            ring.write(image_id, make_frame(1500, image_id))
        raw = np.fromfile(f"{SHM}/{ring_name}", dtype=np.uint8)  # what std_daq's C++ sees
        for image_id in ids[-4:]:  # the last write to each of their slots
            offset = (image_id % 7) * 3000
            assert np.array_equal(raw[offset : offset + 3000].view(np.uint16), make_frame(1500, image_id))


def mapped_resident_bytes(path: str) -> int:
    """Resident bytes (Rss) of this process's mappings of `path`, from /proc/self/smaps."""
    resident = 0
    current = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            current = fields[5] if len(fields) > 5 else None
        elif fields[:1] == ["Rss:"] and current == path:
            resident += int(fields[1]) * 1024
    return resident


def test_create_allocates_and_maps_every_page(ring_name: str) -> None:
    """Pre-faulted: every tmpfs page allocated and mapped before the first frame."""
    geometry = RingGeometry(slot_bytes=2 * MIB, n_slots=16)
    path = f"{SHM}/{ring_name}"
    with ImageRing.create(ring_name, geometry):
        assert os.stat(path).st_blocks * 512 >= geometry.total_bytes
        assert mapped_resident_bytes(path) == geometry.total_bytes
        with ImageRing.attach(ring_name):  # readers map it populated, too
            assert mapped_resident_bytes(path) == 2 * geometry.total_bytes


def test_ids_beyond_2_32_are_read_back_and_distinguished(ring_name: str) -> None:
    geometry = RingGeometry(slot_bytes=4096, n_slots=16)
    big = 2**40 + 3
    with ImageRing.create(ring_name, geometry) as ring, ImageRing.attach(ring_name) as reader:
        ring.write(big, make_frame(2048, big))
        out = np.empty(2048, dtype=np.uint16)
        assert reader.read_into(big, out) == 4096
        assert np.array_equal(out, make_frame(2048, big))
        assert reader.read_into(big - 16, out) is None  # same slot, older id
        assert reader.read_into(big + 16, out) is None  # same slot, not yet written
        assert reader.read_into(big % 2**32, out) is None  # same low 32 bits, older
        assert reader.counters["overwritten"] == 2
        assert reader.counters["not_written"] == 1
        with pytest.raises(ValueError, match="outside"):
            ring.write(2**64, b"x")
        with pytest.raises(ValueError, match="outside"):
            ring.write(-1, b"x")


# ---------------------------------------------------------------------- across processes


def test_frames_written_by_one_process_are_read_pixel_exact_by_another(
    ring_name: str, children: list[Child]
) -> None:
    slot_bytes, n_slots = 2 * MIB, 8
    owner = spawn(children, "own", ring_name, slot_bytes, n_slots, "--first", 100, "--count", 8)
    owner.wait_line("READY")
    with ImageRing.attach(ring_name, RingGeometry(slot_bytes, n_slots)) as ring:
        out = np.empty(slot_bytes // 2, dtype=np.uint16)
        for image_id in range(100, 108):
            assert ring.read_into(image_id, out) == slot_bytes
            assert np.array_equal(out, make_frame(slot_bytes // 2, image_id))
            view = ring.view(image_id)
            assert view is not None
            pixels = view.array(np.uint16, (1024, 1024))
            assert np.array_equal(pixels.ravel(), make_frame(slot_bytes // 2, image_id))
            assert not pixels.flags.writeable
            assert view.still_valid()
            del pixels, view
        assert ring.counters["reads"] == 16
        assert ring.owner_pid == owner.pid
    assert owner.finish() == 0
    assert segment_files(ring_name) == []


def test_lapped_ids_are_none_and_counted_never_wrong(ring_name: str) -> None:
    slot_bytes, n_slots = 64 * 1024, 4
    with ImageRing.create(ring_name, RingGeometry(slot_bytes, n_slots)) as ring:
        for image_id in range(20):
            ring.write(image_id, make_frame(slot_bytes // 2, image_id))
        with ImageRing.attach(ring_name, RingGeometry(slot_bytes, n_slots)) as reader:
            out = np.empty(slot_bytes // 2, dtype=np.uint16)
            results = [reader.read_into(image_id, out) for image_id in range(16)]
            assert results == [None] * 16  # lapped: never the newer frame in their slot
            for image_id in range(16, 20):  # still in the ring
                assert reader.read_into(image_id, out) == slot_bytes
                assert np.array_equal(out, make_frame(slot_bytes // 2, image_id))
                view = reader.view(image_id)
                assert view is not None and view.still_valid()
            assert reader.view(3) is None
            assert reader.counters == {
                "writes": 0,
                "reads": 8,
                "torn_reads": 0,
                "overwritten": 17,
                "not_written": 0,
                "unverified_reads": 0,
                "resized_reads": 0,
            }
            assert reader.read_into(20, out) is None
            assert reader.counters["not_written"] == 1


def test_readers_lagging_behind_a_running_writer_never_get_a_wrong_frame(
    ring_name: str, children: list[Child]
) -> None:
    """Reads at lags 0..2 x n_slots behind the head of a writer that keeps lapping the ring."""
    slot_bytes, n_slots = 256 * 1024, 4
    lags = (0, 1, n_slots - 1, n_slots, n_slots + 1, 2 * n_slots)
    writer = spawn(children, "race-writer", ring_name, slot_bytes, n_slots)
    writer.wait_line("READY")
    with ImageRing.attach(ring_name, RingGeometry(slot_bytes, n_slots), timeout=DEADLINE_S) as ring:
        out = np.empty(slot_bytes // 2, dtype=np.uint16)
        expected = np.empty_like(out)
        good = {lag: 0 for lag in lags}
        missed = {lag: 0 for lag in lags}
        wrong = attempts = 0
        deadline = time.monotonic() + RACE_DEADLINE_S  # by count; only stops a hang
        while ring.last_written_id < 2 * n_slots and time.monotonic() < deadline:
            pass  # every lag below is an id the writer has completed
        while time.monotonic() < deadline and min(good[0], good[1], missed[n_slots]) < 20:
            head = ring.last_written_id
            for lag in lags:
                attempts += 1
                if ring.read_into(head - lag, out) is None:
                    missed[lag] += 1
                    continue
                fill_frame(expected, head - lag)
                if np.array_equal(out, expected):
                    good[lag] += 1
                else:
                    wrong += 1
        counters = ring.counters
    assert writer.finish() == 0
    assert wrong == 0
    assert good[0] >= 20 and good[1] >= 20
    for lag in lags[3:]:  # the writer only moves on: these slots were lapped for sure
        assert good[lag] == 0
    assert missed[n_slots] >= 20
    assert counters["reads"] == sum(good.values())
    assert counters["overwritten"] >= sum(missed[lag] for lag in lags[3:])
    assert counters["not_written"] == 0
    assert counters["reads"] + counters["overwritten"] + counters["torn_reads"] == attempts


def test_reads_racing_an_overwrite_are_detected_and_every_accepted_read_is_exact(
    ring_name: str, children: list[Child]
) -> None:
    """One 8 MiB slot rewritten in a tight loop while we copy it out / compare in place."""
    slot_bytes, n_slots = 8 * MIB, 1
    n_pixels = slot_bytes // 2
    writer = spawn(children, "race-writer", ring_name, slot_bytes, n_slots)
    writer.wait_line("READY")
    ring = ImageRing.attach(ring_name, RingGeometry(slot_bytes, n_slots), timeout=DEADLINE_S)
    out = np.empty(n_pixels, dtype=np.uint16)
    expected = np.empty_like(out)
    copy_ok = copy_wrong = copy_torn = 0
    view_ok = view_wrong = view_torn = torn_view_differed = 0
    deadline = time.monotonic() + RACE_DEADLINE_S  # by count; only stops a hang
    while time.monotonic() < deadline and min(copy_ok, copy_torn, view_ok, view_torn) < 3:
        # copy-out: accepted copies are checked afterwards, at leisure
        image_id = ring.last_written_id
        torn_before = ring.counters["torn_reads"]
        if ring.read_into(image_id, out) is not None:
            fill_frame(expected, image_id)
            if np.array_equal(out, expected):
                copy_ok += 1
            else:
                copy_wrong += 1
        copy_torn += ring.counters["torn_reads"] - torn_before
        # zero-copy: compare in place against the frame predicted for the next id
        target = ring.last_written_id + 1
        fill_frame(expected, target)
        while ring.last_written_id < target and time.monotonic() < deadline:
            pass
        view = ring.view(target)
        if view is None:
            continue
        same = bool(np.array_equal(view.array(np.uint16, (n_pixels,)), expected))
        if view.still_valid():
            view_ok += same
            view_wrong += not same
        else:
            view_torn += 1
            torn_view_differed += not same
    counters = ring.counters
    ring.close()
    assert writer.finish() == 0
    print(
        f"copy ok/torn {copy_ok}/{copy_torn}, view ok/torn {view_ok}/{view_torn} "
        f"(torn views whose pixels differed: {torn_view_differed}), {counters}"
    )
    assert copy_wrong == 0 and view_wrong == 0
    assert copy_ok >= 3 and view_ok >= 3
    assert copy_torn >= 1 and view_torn >= 1, "the race never happened"
    assert counters["torn_reads"] == copy_torn + view_torn


def test_a_reader_process_exiting_leaves_the_ring_working(ring_name: str, children: list[Child]) -> None:
    slot_bytes, n_slots = 64 * 1024, 8
    with ImageRing.create(ring_name, RingGeometry(slot_bytes, n_slots)) as ring:
        ring.write(1, make_frame(slot_bytes // 2, 1))
        reader = spawn(children, "read", ring_name, slot_bytes, n_slots, "--first", 1, "--count", 1)
        assert json.loads(reader.wait_line("{"))["good"] == 1
        assert reader.proc.wait(timeout=DEADLINE_S) == 0
        assert len(segment_files(ring_name)) == 2
        assert ring.name_exists()
        ring.write(2, make_frame(slot_bytes // 2, 2))
        with ImageRing.attach(ring_name, RingGeometry(slot_bytes, n_slots)) as later:
            out = np.empty(slot_bytes // 2, dtype=np.uint16)
            for image_id in (1, 2):
                assert later.read_into(image_id, out) == slot_bytes
                assert np.array_equal(out, make_frame(slot_bytes // 2, image_id))


# ---------------------------------------------------------------------- ownership


def test_creators_racing_for_one_ring_give_exactly_one_owner(
    ring_name: str, children: list[Child]
) -> None:
    start_at = time.time() + 2.0  # after the three interpreters have started (usually)
    racers = [
        spawn(children, "own", ring_name, 4096, 4, "--count", 1, "--at", start_at) for _ in range(3)
    ]
    lines = [racer.wait_line("") for racer in racers]
    winners = [racer for racer, line in zip(racers, lines, strict=True) if line.startswith("READY")]
    refused = [line for line in lines if line.startswith("REFUSED")]
    assert len(winners) == 1 and len(refused) == 2, lines
    named = (f"pid {winners[0].pid}", "still creating it")  # the winner may not have stamped yet
    assert all(any(text in line for text in named) for line in refused), refused
    assert all(f"{SHM}/{ring_name}.stddaq" in line for line in refused)
    with pytest.raises(RingOwnerExists, match=rf"live process \(pid {winners[0].pid};"):
        ImageRing.create(ring_name, RingGeometry(4096, 4))  # a later creator is refused, too
    with ImageRing.attach(ring_name, RingGeometry(4096, 4)) as reader:
        assert reader.owner_pid == winners[0].pid
        assert reader.view(0) is not None
    assert winners[0].finish() == 0
    assert segment_files(ring_name) == []


def test_a_crashed_owner_is_taken_over_in_place_with_a_warning(
    ring_name: str, children: list[Child], caplog: pytest.LogCaptureFixture
) -> None:
    slot_bytes, n_slots = 64 * 1024, 8
    owner = spawn(children, "own", ring_name, slot_bytes, n_slots, "--count", 3)
    owner.wait_line("READY")
    early_reader = ImageRing.attach(ring_name, RingGeometry(slot_bytes, n_slots))
    owner.kill()  # kill -9: no close(), the segments stay, the kernel drops the lock
    assert len(segment_files(ring_name)) == 2
    with (
        caplog.at_level(logging.WARNING),
        ImageRing.create(ring_name, RingGeometry(slot_bytes, n_slots)) as ring,
    ):
        assert any(f"previous owner (pid {owner.pid}) is gone" in r.getMessage() for r in caplog.records)
        out = np.empty(slot_bytes // 2, dtype=np.uint16)
        assert ring.read_into(2, out) == slot_bytes  # the dead owner's frames are kept
        assert np.array_equal(out, make_frame(slot_bytes // 2, 2))
        ring.write(9, make_frame(slot_bytes // 2, 9))  # slot 1: overwrites id 1
        assert early_reader.name_exists()
        assert early_reader.read_into(9, out) == slot_bytes  # old readers stay attached
        assert np.array_equal(out, make_frame(slot_bytes // 2, 9))
        assert early_reader.read_into(1, out) is None
        assert early_reader.owner_pid == os.getpid()
    assert segment_files(ring_name) == []
    assert not early_reader.name_exists()
    early_reader.close()


def test_a_crashed_owner_with_other_geometry_is_replaced(
    ring_name: str, children: list[Child], caplog: pytest.LogCaptureFixture
) -> None:
    owner = spawn(children, "own", ring_name, 8192, 4, "--count", 4)
    owner.wait_line("READY")
    early_reader = ImageRing.attach(ring_name)
    owner.kill()
    with caplog.at_level(logging.WARNING), ImageRing.create(ring_name, RingGeometry(4096, 4)):
        assert any("slot_bytes=8192" in r.getMessage() for r in caplog.records)
        assert not early_reader.name_exists()  # it can tell that it lost the ring
        out = np.empty(4096, dtype=np.uint16)
        assert early_reader.read_into(3, out) == 8192  # its old, complete frames stay exact
        assert np.array_equal(out, make_frame(4096, 3))
        with ImageRing.attach(ring_name, RingGeometry(4096, 4)) as reader:
            assert reader.geometry == RingGeometry(4096, 4)
            assert reader.read_into(3, out) is None
    early_reader.close()


def test_close_by_the_owner_removes_both_segments_attachers_remove_nothing(
    ring_name: str,
) -> None:
    ring = ImageRing.create(ring_name, RingGeometry(4096, 4))
    assert segment_files(ring_name) == [f"{SHM}/{ring_name}", f"{SHM}/{ring_name}.stddaq"]
    reader = ImageRing.attach(ring_name, RingGeometry(4096, 4))
    reader.close()
    assert len(segment_files(ring_name)) == 2
    ring.close()
    assert segment_files(ring_name) == []
    ring.close()  # idempotent
    with pytest.raises(RingError, match="does not exist"):
        ImageRing.attach(ring_name)


def test_a_vanished_name_is_noticed(ring_name: str) -> None:
    with ImageRing.create(ring_name, RingGeometry(4096, 4)) as ring:
        assert ring.name_exists()
        os.unlink(f"{SHM}/{ring_name}")  # what a std_daq reader does when it exits
        assert not ring.name_exists()
        ring.write(1, b"still mapped")
        assert ring.view(1) is not None


# ---------------------------------------------------------------------- attaching


def test_attach_with_a_different_geometry_is_refused(ring_name: str) -> None:
    with ImageRing.create(ring_name, RingGeometry(4096, 4)):
        with pytest.raises(RingError) as refused:
            ImageRing.attach(ring_name, RingGeometry(4096, 8))
        message = str(refused.value)
        assert "n_slots=4" in message and "n_slots=8" in message and f"pid {os.getpid()}" in message


def test_attach_waits_for_a_late_owner(ring_name: str) -> None:
    created: list[ImageRing] = []

    def create_late() -> None:
        time.sleep(0.3)
        created.append(ImageRing.create(ring_name, RingGeometry(4096, 4)))
        created[0].write(0, b"late")

    owner = threading.Thread(target=create_late)
    owner.start()
    try:
        with ImageRing.attach(ring_name, RingGeometry(4096, 4), timeout=DEADLINE_S) as ring:
            owner.join(DEADLINE_S)
            view = ring.view(0)
            assert view is not None and bytes(view.data) == b"late"
    finally:
        owner.join(DEADLINE_S)
        for ring in created:
            ring.close()


def test_attach_to_a_missing_or_foreign_segment_says_why(ring_name: str) -> None:
    with pytest.raises(RingError, match=rf"{ring_name}\.stddaq is missing"):
        ImageRing.attach(ring_name)
    Path(f"{SHM}/{ring_name}").write_bytes(b"\0" * 4096)  # a std_daq-made segment only
    with pytest.raises(RingError, match="no stddaq companion"):
        ImageRing.attach(ring_name)
    Path(f"{SHM}/{ring_name}.stddaq").write_bytes(b"garbage")
    with pytest.raises(RingError, match=r"not a .*stddaq ring companion"):
        ImageRing.attach(ring_name, timeout=0.1)


def test_create_adopts_a_std_daq_segment_of_the_right_size(
    ring_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    geometry = RingGeometry(4096, 4)
    path = f"{SHM}/{ring_name}"
    Path(path).write_bytes(b"\0" * geometry.total_bytes)  # a std_daq service came first
    std_daq_view = np.memmap(path, dtype=np.uint8, mode="r")
    with caplog.at_level(logging.WARNING), ImageRing.create(ring_name, geometry) as ring:
        assert any("adopting" in r.getMessage() for r in caplog.records)
        ring.write(6, make_frame(2048, 6))
        assert np.array_equal(std_daq_view[2 * 4096 : 3 * 4096].view(np.uint16), make_frame(2048, 6))
    del std_daq_view


# ---------------------------------------------------------------------- writer API


def test_a_views_address_is_where_its_bytes_are(ring_name: str) -> None:
    """The writer aligns its O_DIRECT writes by `address`: it must be the data's own."""
    with ImageRing.create(ring_name, RingGeometry(8192, 4)) as ring, ImageRing.attach(ring_name) as reader:
        for image_id in range(6):  # every slot, and ids that wrap around
            ring.write(image_id, make_frame(4096, image_id)[: 1024 + image_id])
            for holder in (ring, reader):
                view = holder.view(image_id)
                assert view is not None and view.nbytes == 2 * (1024 + image_id)
                assert view.address == np.frombuffer(view.data, np.uint8).ctypes.data
                del view


def test_zero_copy_write_and_error_paths(ring_name: str) -> None:
    with ImageRing.create(ring_name, RingGeometry(4096, 4)) as ring:
        slot = ring.begin_write(5)
        assert len(slot) == 4096 and not slot.readonly
        np.frombuffer(slot, dtype=np.uint16)[:] = make_frame(2048, 5)
        assert ring.view(5) is None  # being written: not handed out
        ring.end_write(5, 4096)
        view = ring.view(5)
        assert view is not None and view.data.readonly
        assert np.array_equal(view.array("<u2", (64, 32)).ravel(), make_frame(2048, 5))
        with pytest.raises(ValueError, match="needs"):
            view.array(np.uint32, (64, 32))
        del view, slot
        with pytest.raises(ValueError, match="4097 bytes"):
            ring.write(6, bytes(4097))
        assert ring.view(6) is None and ring.view(2) is None
        with pytest.raises(RingError, match="does not match"):
            ring.end_write(7, 10)
        ring.write(1, make_frame(4096, 1)[::2])  # non-contiguous input
        out = bytearray(4096)
        assert ring.read_into(1, out) == 4096
        assert np.array_equal(np.frombuffer(out, np.uint16), make_frame(4096, 1)[::2])
        with pytest.raises(ValueError, match="out holds 100"):
            ring.read_into(1, bytearray(100))
        with ImageRing.attach(ring_name) as reader, pytest.raises(RingError, match="read-only"):
            reader.write(3, b"no")


def test_several_writes_in_progress_finish_in_any_order(ring_name: str) -> None:
    """start_write tokens: different slots at once, finished out of order; one write per slot."""
    with ImageRing.create(ring_name, RingGeometry(4096, 4)) as ring, ImageRing.attach(ring_name) as reader:
        first, second = ring.start_write(8), ring.start_write(9)
        assert ring.writes_in_progress == 2
        for token in (first, second):
            assert len(token.data) == 4096 and not token.data.readonly
            np.frombuffer(token.data, dtype=np.uint16)[:] = make_frame(2048, token.image_id)
        with pytest.raises(SlotBusy, match="slot 0 is still being written with image 8"):
            ring.start_write(12)  # same slot as 8
        with pytest.raises(SlotBusy):
            ring.begin_write(8)  # the single-write API respects tokens too
        ring.finish_write(second, 4096)  # the later id first
        assert reader.view(8) is None, "a write in progress is never handed out"
        view = reader.view(9)
        assert view is not None and np.array_equal(view.array(np.uint16, (2048,)), make_frame(2048, 9))
        ring.finish_write(first, 4000)
        assert reader.read_into(8, bytearray(4096)) == 4000
        assert ring.writes_in_progress == 0 and ring.counters["writes"] == 2
        with pytest.raises(RingError, match="not in progress"):
            ring.finish_write(first, 4096)  # a token is taken back once
        with pytest.raises(ValueError, match="4097 bytes"):
            ring.finish_write(ring.start_write(10), 4097)
        del view


def test_an_abandoned_write_is_never_read_and_frees_its_slot(ring_name: str) -> None:
    with ImageRing.create(ring_name, RingGeometry(4096, 4)) as ring, ImageRing.attach(ring_name) as reader:
        ring.write(1, make_frame(2048, 1))
        token = ring.start_write(5)  # slot 1: its old image is gone from now on
        token.data[:10] = b"half-writt"
        ring.abandon_write(token)
        ring.abandon_write(token)  # twice is harmless
        assert reader.view(1) is None and reader.view(5) is None
        with pytest.raises(RingError, match="not in progress"):
            ring.finish_write(token, 4096)
        ring.write(5, make_frame(2048, 5))  # the slot can be written again
        out = bytearray(4096)
        assert reader.read_into(5, out) == 4096
        assert np.array_equal(np.frombuffer(out, np.uint16), make_frame(2048, 5))
        # the single-write API abandons its unfinished write when the next one begins
        ring.begin_write(6)
        ring.write(7, make_frame(2048, 7))
        assert reader.view(6) is None and reader.view(7) is not None
        assert ring.writes_in_progress == 0
        with ImageRing.attach(ring_name) as other, pytest.raises(RingError, match="read-only"):
            other.start_write(3)


def test_threads_writing_different_slots_at_once_never_hand_out_a_torn_image(
    ring_name: str, children: list[Child]
) -> None:
    """Two writer threads, each rewriting its own 8 MiB slot in a loop (straight into the
    slot, through start_write/finish_write), while this process reads both slots.

    Driven by count, not by time: it reads until each slot gave 3 clean reads and the race
    (a read overlapping a write) happened once. Each writer thread rests a random moment
    after each frame (up to WRITER_PAUSE_S), so its slot holds a whole frame part of the
    time and is being written the rest, at every speed of the machine: both outcomes keep
    coming. The deadline only stops a hang."""
    slot_bytes, n_slots = 8 * MIB, 2
    n_pixels = slot_bytes // 2
    writer = spawn(
        children, "threads-writer", ring_name, slot_bytes, n_slots, "--threads", 2, "--pause", WRITER_PAUSE_S
    )
    writer.wait_line("READY")
    ring = ImageRing.attach(ring_name, RingGeometry(slot_bytes, n_slots), timeout=DEADLINE_S)
    out = np.empty(n_pixels, dtype=np.uint16)
    expected = np.empty_like(out)
    ok = {0: 0, 1: 0}
    wrong = torn = 0
    deadline = time.monotonic() + RACE_DEADLINE_S
    while min(ok.values()) < 3 or torn < 1:
        assert time.monotonic() < deadline, f"hang: {ok} clean reads, {torn} torn"
        head = ring.last_written_id
        for image_id in (head, head + 1, max(head - 1, 0)):  # both threads' latest ids
            torn_before = ring.counters["torn_reads"]
            if ring.read_into(image_id, out) is not None:
                fill_frame(expected, image_id)
                if np.array_equal(out, expected):
                    ok[image_id % 2] += 1
                else:
                    wrong += 1
            torn += ring.counters["torn_reads"] - torn_before
    counters = ring.counters
    ring.close()
    assert writer.finish() == 0
    written = int(writer.wait_line("WROTE").split()[1])
    busy = int(writer.wait_line("BUSY").split()[1])
    print(f"ok {ok}, torn {torn}, written {written}, {counters}")
    assert wrong == 0
    assert min(ok.values()) >= 3, "both threads' slots were read"
    assert torn >= 1, "the race never happened"
    assert busy == 0 and written > 0


def test_for_config_names_and_sizes_the_ring_from_the_config(ring_name: str) -> None:
    config = parse_config(pco_config(ring_name.removesuffix("-image") + "x", 4, 8), "test")
    name = f"{config.detector_name}-image"
    try:
        with ImageRing.for_config(config, create=True) as ring:
            assert ring.name == name and ring.geometry == RingGeometry(64, 1000)
            with ImageRing.for_config(config, create=False) as reader:
                assert reader.geometry == ring.geometry and not reader.is_owner
    finally:
        for path in (f"{SHM}/{name}", f"{SHM}/{name}.stddaq"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


# ---------------------------------------------------------------------- sizes as std_daq


def _config(ring_name: str, height: int, width: int, **extra: object) -> DaqConfig:
    return parse_config(pco_config(ring_name, height, width, **extra), "test")


def test_ram_buffer_gb_is_read_as_std_daq_reads_it_and_a_fraction_is_warned(
    ring_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 256x256 uint16 = 131,072 bytes a slot. std_daq reads ram_buffer_gb as an unsigned
    # integer: 0.5 -> 0 -> its minimum of 1000 slots (not 4096), 2.9 -> 2 -> 16384 slots.
    half = _config(ring_name, 256, 256, ram_buffer_gb=0.5)
    assert ring_geometry(half) == RingGeometry(131072, 1000)
    assert ring_geometry(half).total_bytes == 132120576  # what std_daq ftruncates the segment to
    assert ring_geometry(_config(ring_name, 256, 256, ram_buffer_gb=2.9)).n_slots == 16384
    assert ring_geometry(_config(ring_name, 256, 256, ram_buffer_gb=2)).n_slots == 16384
    assert ram_buffer_warning(_config(ring_name, 256, 256, ram_buffer_gb=2)) is None
    path = tmp_path / "daq.json"
    path.write_text(json.dumps(half.model_dump(mode="json")))
    assert stddaq_main(["config", "validate", "-q", str(path)]) == 0
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"{path}: warning: ram_buffer_gb: 0.5 has a fractional part")
    assert "1000 slots" in warning and "integer 0" in warning


def test_the_owner_warns_about_a_fractional_ram_buffer_gb_at_creation(
    ring_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(ring_name, 4, 4, ram_buffer_gb=0.5)
    try:
        with caplog.at_level(logging.WARNING), ImageRing.for_config(config, create=True) as ring:
            assert ring.geometry.n_slots == 1000
        assert any("ram_buffer_gb: 0.5 has a fractional part" in r.getMessage() for r in caplog.records)
    finally:
        for path in (f"{SHM}/{ring_name}-image", f"{SHM}/{ring_name}-image.stddaq"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def test_create_refuses_a_segment_of_another_size_and_never_maps_or_resizes_it(ring_name: str) -> None:
    geometry = RingGeometry(4096, 4)
    path = f"{SHM}/{ring_name}"
    foreign = b"std_daq" * 1000  # another program's segment of another size
    Path(path).write_bytes(foreign)
    for make in (
        lambda: ImageRing.create(ring_name, geometry),
        lambda: ImageRing.attach(ring_name, geometry, foreign=True),
    ):
        with pytest.raises(RingError) as refused:
            make()
        message = str(refused.value)
        assert len(message.splitlines()) == 1
        assert f"has {len(foreign)} bytes" in message and f"needs {geometry.total_bytes} bytes" in message
        assert Path(path).read_bytes() == foreign  # untouched: not resized, not replaced


def test_attach_refuses_a_stddaq_ring_whose_segment_was_resized(ring_name: str) -> None:
    geometry = RingGeometry(4096, 4)
    with ImageRing.create(ring_name, geometry):
        os.truncate(f"{SHM}/{ring_name}", MIB)  # as a std_daq service with another config does
        with pytest.raises(RingError, match=rf"has {MIB} bytes but this config needs {geometry.total_bytes}"):
            ImageRing.attach(ring_name, geometry)


def test_a_segment_resized_under_its_holders_is_no_longer_touched(
    ring_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    geometry = RingGeometry(1 * MIB, 4)  # 4 MiB: a shrink to 1 MiB removes slots 1-3
    frame = make_frame(MIB // 2, 3)
    with ImageRing.create(ring_name, geometry) as owner, ImageRing.attach(ring_name, geometry) as reader:
        owner.write(3, frame)
        assert reader.view(3) is not None
        os.truncate(f"{SHM}/{ring_name}", MIB)  # touching slot 3 now would be SIGBUS
        with caplog.at_level(logging.ERROR):
            with pytest.raises(RingResized, match=rf"changed size .* from {geometry.total_bytes} to {MIB}"):
                owner.write(3, frame)
            assert reader.view(3) is None
            assert reader.read_into(3, np.empty(MIB // 2, np.uint16)) is None
            assert not reader.check_size() and reader.resized and owner.resized
        errors = [r for r in caplog.records if "changed size" in r.getMessage()]
        assert len(errors) == 2  # one error per holder, not one per access
        assert reader.counters["resized_reads"] == 2
    # The owner does not unlink a segment another program resized: it is theirs now.
    assert os.path.getsize(f"{SHM}/{ring_name}") == MIB


def test_a_ring_without_companion_is_read_as_std_daq_reads_it_and_says_so(
    ring_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    geometry = RingGeometry(8192, 4)
    path = f"{SHM}/{ring_name}"
    with open(path, "wb") as segment:  # what a std_daq service makes: the data segment only
        segment.truncate(geometry.total_bytes)
    writer = np.memmap(path, dtype=np.uint16, mode="r+")
    writer[2 * 4096 : 3 * 4096] = make_frame(4096, 6)  # image 6 lives in slot 6 % 4 = 2
    with pytest.raises(RingError, match="no stddaq companion"):
        ImageRing.attach(ring_name, geometry)  # a stddaq-only reader keeps refusing it
    with caplog.at_level(logging.WARNING), ImageRing.attach(ring_name, geometry, foreign=True) as ring:
        assert not ring.verified and not ring.is_owner
        assert any("cannot prove" in r.getMessage() for r in caplog.records)
        view = ring.view(6, 8192)
        assert view is not None and view.still_valid()
        assert np.array_equal(np.frombuffer(view.data, np.uint16), make_frame(4096, 6))
        assert view.address == np.frombuffer(view.data, np.uint8).ctypes.data
        out = np.empty(4096, np.uint16)
        assert ring.read_into(6, out) == 8192 and np.array_equal(out, make_frame(4096, 6))
        assert ring.counters["unverified_reads"] == 2
        assert ring.name_exists()
        del view
    del writer
    assert os.path.exists(path)  # an attacher never unlinks


def test_a_stddaq_ring_is_never_taken_for_a_foreign_one_while_it_is_created(
    ring_name: str, children: list[Child]
) -> None:
    geometry = RingGeometry(4096, 4)
    owner = spawn(children, "own", ring_name, 4096, 4, "--delay", 0.2)
    with ImageRing.attach(ring_name, geometry, timeout=DEADLINE_S, foreign=True) as ring:
        # The companion is renamed into place before the data segment: whenever the data
        # segment is there, so is its companion.
        assert ring.verified
    owner.wait_line("READY")
