"""Camera faults under `stddaq up`: a restart with ids jumping back, a pause, garbage,
wrong and changed frame shapes, random bytes. Every fault is counted by the receiver,
shows in the acquisition's status, never crashes a service and never puts a bad frame
into a file; the next acquisition works. The last test stops the stack clean.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import pytest
import zmq

from stddaq_common.wire.bsread import BsreadEncoder, ChannelSpec
from tests.faults.rig import Stack, wait_for

pytestmark = pytest.mark.slow

RATE = "300"


class CameraFaults:
    """The module's stack and a counter of acquisition names and camera ids."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.runs = 0
        self.next_id = 0

    def name(self) -> str:
        self.runs += 1
        return f"run{self.runs}"

    def ids(self, count: int) -> int:
        """The first of `count` fresh pulse ids, far above every id used before."""
        first = self.next_id + 10_000
        self.next_id = first + count
        return first

    def idle(self) -> None:
        self.stack.wait_idle()

    def receiver(self) -> dict[str, float]:
        """The receiver's counters from its newest stats line (logged every second)."""
        return self.stack.last_stats("receiver")

    def receiver_quiet(self) -> dict[str, float]:
        """The receiver's counters once a stats period went by without any frame."""
        return dict(
            wait_for("the receiver quiet", lambda: (s := self.receiver())["frames_received_rate"] == 0 and s)
        )

    def receiver_after(self, name: str, value: float) -> dict[str, float]:
        """The receiver's counters once `name` has reached `value`."""
        return dict(
            wait_for(
                f"receiver {name} >= {value}", lambda: (s := self.receiver()).get(name, 0) >= value and s
            )
        )

    def next_acquisition_works(self) -> None:
        self.idle()
        started = self.stack.start(self.name(), n_image=100)
        camera = self.stack.camera("--rate", RATE, "--frames", "150", "--first-id", str(self.ids(150)))
        status = self.stack.wait_end(started["acquisition_id"])
        camera.stop()
        assert (status["outcome"], status["images_written"], status["images_missing"]) == (
            "file_saved",
            100,
            0,
        )
        check = self.stack.read_back(status)
        assert check.ids == list(range(check.ids[0], check.ids[0] + 100))


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CameraFaults]:
    stack = Stack(tmp_path_factory.mktemp("camera"), writers=2, live_stream=False)
    try:
        stack.up()
        yield CameraFaults(stack)
    finally:
        stack.cleanup()


def test_camera_restart_with_ids_jumping_back(faults: CameraFaults) -> None:
    stack = faults.stack
    faults.idle()
    restarts = faults.receiver_quiet()["restarts"]
    first = faults.ids(3000)
    started = stack.start(faults.name())
    camera = stack.camera(
        "--rate",
        RATE,
        "--first-id",
        str(first),
        "--frames",
        "3000",
        "--restart-every",
        "1000",
        "--restart-pause",
        "0.5",
    )
    status = stack.wait_end(started["acquisition_id"])
    camera.stop()
    # The receiver starts a new sequence; the driver ends the acquisition with the reason.
    assert status["outcome"] == "error"
    assert "image ids went backwards" in status["last_error"]
    assert "restarted" in status["last_error"]
    assert faults.receiver_after("restarts", restarts + 1)["restarts"] >= restarts + 1
    check = stack.read_back(status)  # every image exact, every missing one zeros
    assert check.written_ids and all(first <= i < first + 1000 for i in check.ids)
    faults.next_acquisition_works()


def test_camera_pause_and_resume(faults: CameraFaults) -> None:
    stack = faults.stack
    faults.idle()
    first = faults.ids(600)
    started = stack.start(faults.name())
    stack.camera("--rate", RATE, "--first-id", str(first), "--frames", "300").wait()
    stack.wait_written(300)
    time.sleep(3)  # the camera is silent for a while (the fault, not a measurement)
    paused = stack.status()
    assert paused["state"] == "recording" and paused["images_written"] == 300 and paused["last_error"] is None
    stack.camera("--rate", RATE, "--first-id", str(first + 300), "--frames", "300").wait()
    stack.wait_written(600)
    stack.stop()
    status = stack.wait_end(started["acquisition_id"])
    assert (status["outcome"], status["images_written"], status["images_missing"]) == ("file_saved", 600, 0)
    assert stack.read_back(status).ids == list(range(first, first + 600))


def test_garbage_duplicates_and_wrong_shapes_are_rejected_counted_and_never_written(
    faults: CameraFaults,
) -> None:
    stack = faults.stack
    faults.idle()
    before = faults.receiver_quiet()
    first = faults.ids(600)
    garbage = list(range(first + 100, first + 109))  # not JSON, bad header field, wrong part count
    wrong_shape = [first + 200, first + 201, first + 350]
    duplicate = [first + 400, first + 401]
    started = stack.start(faults.name())
    camera = stack.camera(
        "--rate",
        RATE,
        "--first-id",
        str(first),
        "--frames",
        "600",
        "--garbage",
        f"{garbage[0]}-{garbage[-1]}",
        "--wrong-shape",
        ",".join(map(str, wrong_shape)),
        "--duplicate",
        ",".join(map(str, duplicate)),
    )
    assert camera.wait() == 0
    stack.wait_written(600 - len(garbage) - len(wrong_shape))
    stack.stop()
    status = stack.wait_end(started["acquisition_id"])
    assert status["outcome"] == "file_saved"
    assert status["id_gaps"] == len(garbage) + len(wrong_shape) == status["images_missing"]
    check = stack.read_back(status)
    assert check.ids == [i for i in range(first, first + 600) if i not in garbage + wrong_shape]
    after = faults.receiver_after("duplicates", before["duplicates"] + len(duplicate))
    rejected = sum(
        after[k] - before[k] for k in after if k.startswith("rejected_") and not k.endswith("_rate")
    )
    assert rejected == len(garbage) + len(wrong_shape)
    assert after["rejected_shape"] - before["rejected_shape"] == len(wrong_shape)


def test_camera_changes_its_frame_shape(faults: CameraFaults) -> None:
    stack = faults.stack
    faults.idle()
    before = faults.receiver_quiet()
    started = stack.start(faults.name())
    first = faults.ids(300)
    wider = stack.camera("--rate", RATE, "--first-id", str(first), "--frames", "300", width=stack.width + 16)
    assert wider.wait() == 0
    after = faults.receiver_after("rejected_shape", before["rejected_shape"] + 300)
    assert after["frames_published"] == before["frames_published"]
    waiting = stack.status()
    assert waiting["state"] == "waiting_for_first_image" and waiting["images_dealt"] == 0
    # The camera goes back to the configured shape: the same acquisition records.
    good = faults.ids(200)
    stack.camera("--rate", RATE, "--first-id", str(good), "--frames", "200").wait()
    stack.wait_written(200)
    stack.stop()
    status = stack.wait_end(started["acquisition_id"])
    assert status["outcome"] == "file_saved" and status["images_written"] == 200
    assert stack.read_back(status).ids == list(range(good, good + 200))


def _garbage_messages(count: int, seed: int) -> list[list[bytes]]:
    """Random multipart messages: random bytes, broken JSON, valid BSREAD with fields mangled."""
    rng = random.Random(seed)
    encoder = BsreadEncoder([ChannelSpec.for_image("pco:FPICTURE", 64, 64, "uint16")])
    valid = [bytes(part) for part in encoder.encode(5, (1, 2), [bytes(64 * 64 * 2)])]
    messages: list[list[bytes]] = []
    for _ in range(count):
        kind = rng.randrange(4)
        if kind == 0:
            messages.append([rng.randbytes(rng.randrange(200)) for _ in range(rng.randrange(1, 6))])
        elif kind == 1:
            header = json.loads(valid[0])
            header[rng.choice(list(header))] = rng.choice([None, -1, "x", 2**70, [], {}, 1.5])
            messages.append([json.dumps(header).encode(), *valid[1:]])
        elif kind == 2:
            cut = [bytearray(part) for part in valid]
            header = cut[rng.randrange(2)]  # a byte of a JSON header: never valid UTF-8 after
            header[rng.randrange(len(header))] ^= 0xFF
            messages.append([bytes(p) for p in cut][: rng.randrange(1, len(cut) + 1)])
        else:
            messages.append([b"{", b"}", rng.randbytes(16)])
    return messages


def test_random_messages_do_not_stop_the_receiver(faults: CameraFaults) -> None:
    """A sender of random bytes at the camera's address: rejected and counted, then real
    frames flow again through the same receiver."""
    stack = faults.stack
    faults.idle()
    before = faults.receiver_quiet()
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.bind(f"tcp://127.0.0.1:{stack.camera_port}")
    try:
        for message in _garbage_messages(300, seed=7):
            push.send_multipart(message)
    finally:
        push.close()
        context.term()
    after = faults.receiver_after("frames_received", before["frames_received"] + 300)
    assert after["frames_published"] == before["frames_published"]
    faults.next_acquisition_works()


def test_after_the_camera_faults_the_stack_stops_clean(faults: CameraFaults) -> None:
    faults.stack.assert_stops_clean()
