"""The receiver as a real process: fake camera (or psi-bsread's Sender) -> receiver -> ring + metadata."""

from __future__ import annotations

import os
import socket
import subprocess

import numpy as np
import pytest

from stddaq_common.bus.metadata import Compression, Dtype, ImageMeta, PcoInfo, Status
from stddaq_common.ring.image_ring import ImageRing
from stddaq_fake_camera.frames import FramePattern
from tests.receiver.conftest import (
    HEIGHT,
    PYTHON,
    WIDTH,
    Daq,
    collect,
    drain,
    final_stats,
    free_tcp_address,
    write_config,
)

pytestmark = pytest.mark.slow

READERS = ["zmtp", "zmq"]
"""The receiver's own ZMTP reader (the default for tcp) and libzmq (the reference)."""


@pytest.fixture(params=READERS)
def reader_daq(daq: Daq, request: pytest.FixtureRequest) -> Daq:
    """The test's detector, its receiver run with each --input-reader in turn."""
    daq.reader = request.param
    return daq


def _check_images(
    ring: ImageRing, metas: list[ImageMeta], expected: FramePattern, out_dtype: str = "<u2"
) -> None:
    """Every published image is in its slot, complete and pixel-exact."""
    for meta in metas:
        view = ring.view(meta.image_id)
        assert view is not None, f"image {meta.image_id} is not in its slot"
        image = view.array(out_dtype, (HEIGHT, WIDTH))
        want = expected.frame(meta.image_id).astype(out_dtype)
        assert np.array_equal(image, want), f"image {meta.image_id} differs"
        assert view.still_valid()


def _ids(metas: list[ImageMeta]) -> list[int]:
    return [meta.image_id for meta in metas]


def _stop_all(daq: Daq, camera_exits_by_itself: bool = True) -> dict[str, float]:
    """Camera finished (exit 0), receiver stopped by SIGTERM (exit 0); its final counters."""
    receiver, camera = daq.processes[0], daq.processes[1]
    if camera_exits_by_itself:
        assert camera.wait(60) == 0, camera.stderr()
    assert receiver.terminate() == 0, receiver.stderr()
    return final_stats(receiver.stderr())


def test_four_connections_give_every_frame_in_order_pixel_exact(reader_daq: Daq) -> None:
    daq = reader_daq
    address = free_tcp_address()
    daq.start_receiver(address, "-n", "4")
    ring, subscriber = daq.attach()
    daq.start_camera(address, "--frames", "300")
    metas = collect(subscriber, 300)
    assert _ids(metas) == list(range(300))
    _check_images(ring, metas, FramePattern((HEIGHT, WIDTH), np.dtype("<u2")))
    first = metas[0]
    assert (first.height, first.width, first.size) == (HEIGHT, WIDTH, HEIGHT * WIDTH * 2)
    assert first.dtype == Dtype.UINT16
    assert (first.status, first.compression) == (Status.GOOD_IMAGE, Compression.NONE)
    assert isinstance(first.detail, PcoInfo)
    assert first.detail.bsread_name == "pco:FPICTURE"
    assert first.detail.global_timestamp_sec > 1_600_000_000
    stats = _stop_all(daq)
    assert drain(subscriber) == []
    assert stats["frames_received"] == 300
    assert stats["frames_published"] == 300
    assert stats["missing_ids"] == stats["duplicates"] == stats["publish_dropped"] == 0
    assert sum(value for name, value in stats.items() if name.startswith("rejected_")
               and not name.endswith("_rate")) == 0
    ring.close()
    subscriber.close()


def test_a_low_rate_stream_gathered_by_the_pause_gives_every_frame_in_order_pixel_exact(
    reader_daq: Daq,
) -> None:
    """At 100 frames/s every receiving round pauses to gather the next ones (zmtp_inputs):
    every frame still arrives, published once, in id order and pixel-exact."""
    daq = reader_daq
    address = free_tcp_address()
    daq.start_receiver(address, "-n", "4")
    ring, subscriber = daq.attach()
    daq.start_camera(address, "--frames", "80", "--rate", "100")
    metas = collect(subscriber, 80)
    assert _ids(metas) == list(range(80))
    _check_images(ring, metas, FramePattern((HEIGHT, WIDTH), np.dtype("<u2")))
    stats = _stop_all(daq)
    assert drain(subscriber) == []
    assert stats["frames_received"] == stats["frames_published"] == 80
    assert stats["missing_ids"] == stats["duplicates"] == stats["publish_dropped"] == 0
    ring.close()
    subscriber.close()


def test_a_camera_faster_than_the_receiver_loses_nothing_over_four_connections(reader_daq: Daq) -> None:
    """Small frames as fast as the camera can: the 4 connections' queues drift apart by more
    than the reorder window; the connections that run ahead wait, no frame is dropped."""
    daq = reader_daq
    frames = 30_000
    address = free_tcp_address()
    daq.start_receiver(address, "-n", "4")
    ring, subscriber = daq.attach()
    daq.start_camera(address, "--frames", str(frames))
    metas = collect(subscriber, frames, deadline_s=180)
    assert _ids(metas) == list(range(frames))
    stats = _stop_all(daq)
    assert stats["frames_published"] == stats["frames_received"] == frames
    assert stats["late_frames"] == stats["restarts"] == stats["missing_ids"] == 0
    _check_images(ring, metas[-200:], FramePattern((HEIGHT, WIDTH), np.dtype("<u2")))
    ring.close()
    subscriber.close()


@pytest.mark.parametrize(
    ("camera_args", "camera_dtype"),
    [
        (["--compression", "bitshuffle_lz4"], "<u2"),
        (["--compression", "lz4", "--dtype", ">u2"], ">u2"),
        (["--no-type-shape", "--dtype", ">u2"], ">u2"),
        (["--dtype", "uint8", "--compression", "bitshuffle_lz4"], "<u1"),
        (["--format", "array-1.0", "--dtype", "float32"], "<f4"),
    ],
    ids=["bitshuffle", "lz4-big-endian", "no-type-shape", "uint8-widened", "array10-float"],
)
def test_input_variants_arrive_converted_and_pixel_exact(
    reader_daq: Daq, camera_args: list[str], camera_dtype: str
) -> None:
    daq = reader_daq
    address = free_tcp_address()
    receiver_args = ["-f", "array-1.0"] if "array-1.0" in camera_args else []
    daq.start_receiver(address, *receiver_args)
    ring, subscriber = daq.attach()
    daq.start_camera(address, "--frames", "120", *camera_args)
    metas = collect(subscriber, 120)
    assert _ids(metas) == list(range(120))
    _check_images(ring, metas, FramePattern((HEIGHT, WIDTH), np.dtype(camera_dtype)))
    stats = _stop_all(daq)
    assert stats["frames_published"] == 120
    ring.close()
    subscriber.close()


def test_fault_modes_are_counted_and_nothing_crashes(reader_daq: Daq) -> None:
    daq = reader_daq
    address = free_tcp_address()
    daq.start_receiver(address)
    ring, subscriber = daq.attach()
    daq.start_camera(
        address, "--frames", "200",
        "--skip", "10,11,12,150",
        "--duplicate", "20,21,100",
        "--wrong-shape", "40,41",
        "--garbage", "60,61,62",  # one message each of: not JSON, bad header field, one part
        "--reverse-burst", "80:12",
    )
    lost = {10, 11, 12, 150} | {40, 41} | {60, 61, 62}
    expected = [i for i in range(200) if i not in lost]
    metas = collect(subscriber, len(expected))
    assert _ids(metas) == expected
    _check_images(ring, metas, FramePattern((HEIGHT, WIDTH), np.dtype("<u2")))
    stats = _stop_all(daq)
    assert drain(subscriber) == []
    assert stats["frames_received"] == 200 - 4 + 3  # skipped ones never sent, duplicates twice
    assert stats["frames_published"] == len(expected)
    assert stats["duplicates"] == 3
    assert stats["missing_ids"] == 4 + 3  # skipped and garbage ids never arrived
    assert stats["gaps"] == 3
    assert stats["rejected_shape"] == 2
    assert (stats["rejected_json"], stats["rejected_header"], stats["rejected_parts"]) == (1, 1, 1)
    ring.close()
    subscriber.close()


def test_a_camera_restart_starts_a_new_sequence(reader_daq: Daq) -> None:
    daq = reader_daq
    address = free_tcp_address()
    daq.start_receiver(address, "--reorder-window", "40")
    ring, subscriber = daq.attach()
    daq.start_camera(address, "--frames", "250", "--restart-every", "100", "--restart-pause", "2.0",
                     "--first-id", "1000")
    metas = collect(subscriber, 250)
    assert _ids(metas) == [*range(1000, 1100), *range(1000, 1100), *range(1000, 1050)]
    stats = _stop_all(daq)
    assert stats["restarts"] == 2
    assert stats["missing_ids"] == stats["duplicates"] == 0
    ring.close()
    subscriber.close()


def test_sigterm_mid_stream_exits_cleanly_and_removes_its_files(reader_daq: Daq) -> None:
    daq = reader_daq
    address = free_tcp_address()
    receiver = daq.start_receiver(address)
    ring, subscriber = daq.attach()
    camera = daq.start_camera(address, "--rate", "200")  # endless
    metas = collect(subscriber, 50)
    assert len(metas) == 50
    assert receiver.terminate() == 0, receiver.stderr()
    assert not os.path.exists(f"/dev/shm/{daq.ring_name}")
    assert not os.path.exists(f"/tmp/{daq.ring_name}")
    assert camera.terminate() == 0, camera.stderr()
    ring.close()
    subscriber.close()


def test_sub_socket_from_a_pub_camera(daq: Daq) -> None:
    address = free_tcp_address()
    daq.start_receiver(address, "-t", "sub")
    ring, subscriber = daq.attach()
    daq.start_camera(address, "--socket", "pub", "--rate", "200", "--frames", "300")
    metas = collect(subscriber, 200)  # a PUB drops what is sent before the subscription is up
    ids = _ids(metas)
    assert len(ids) >= 200
    assert ids == sorted(set(ids))
    _check_images(ring, metas, FramePattern((HEIGHT, WIDTH), np.dtype("<u2")))
    stats = _stop_all(daq)
    assert stats["frames_published"] == stats["frames_received"]
    assert stats["duplicates"] == 0
    ring.close()
    subscriber.close()


_PSI_SENDER = """
import time
import numpy as np
from bsread.sender import Sender
from stddaq_fake_camera.frames import FramePattern

pattern = FramePattern(({h}, {w}), np.dtype("<u2"))
sender = Sender(port={port}, address="tcp://127.0.0.1", queue_size=10)
metadata = {{"type": "uint16", "shape": [{w}, {h}]}} if {with_metadata} else None
sender.add_channel("pco:IMAGE", metadata=metadata)
sender.open()
print("READY psi-bsread-sender", flush=True)
for pulse_id in range({n}):
    sender.send(pulse_id=pulse_id, data={{"pco:IMAGE": pattern.frame(pulse_id)}})
time.sleep(3)  # Sender.close() may drop what is still queued
sender.close()
"""


@pytest.mark.parametrize("with_metadata", [True, False], ids=["type-and-shape", "bare-header"])
def test_psi_bsread_sender_as_camera(reader_daq: Daq, with_metadata: bool) -> None:
    daq = reader_daq
    address = free_tcp_address()
    port = int(address.rsplit(":", 1)[1])
    daq.start_receiver(address)
    ring, subscriber = daq.attach()
    code = _PSI_SENDER.format(h=HEIGHT, w=WIDTH, port=port, with_metadata=with_metadata, n=100)
    sender = daq.start_script(code, "psi-sender")
    metas = collect(subscriber, 100)
    assert _ids(metas) == list(range(100))
    _check_images(ring, metas, FramePattern((HEIGHT, WIDTH), np.dtype("<u2")))
    assert isinstance(metas[0].detail, PcoInfo)
    assert metas[0].detail.bsread_name == "pco:IMAGE"
    assert sender.wait(60) == 0, sender.stderr()
    assert daq.processes[0].terminate() == 0
    ring.close()
    subscriber.close()


@pytest.mark.parametrize(
    ("config_change", "args", "message"),
    [
        ({"detector_type": "gigafrost"}, [], "serves camera streams"),
        ({}, ["-t", "sub", "-n", "4"], "use -n 1"),
        ({}, ["-t", "sub", "-n", "1", "--input-reader", "zmtp"], "reads PULL connections only"),
    ],
    ids=["wrong-detector-type", "sub-with-four-connections", "sub-with-zmtp-reader"],
)
def test_startup_problems_exit_1_with_one_clear_line(
    daq: Daq, config_change: dict[str, str], args: list[str], message: str
) -> None:
    write_config(daq.config_path, daq.detector, **config_change)
    result = subprocess.run(
        [PYTHON, "-m", "stddaq_receiver", str(daq.config_path), free_tcp_address(), *args],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(f"/dev/shm/{daq.ring_name}")



def test_a_peer_breaking_zmtp_is_counted_and_the_receiver_goes_on(daq: Daq) -> None:
    """A peer that is no ZeroMQ socket: the zmtp reader logs it (naming the peer), counts it,
    connects again, and takes frames once a real camera is on the address."""
    from stddaq_common.wire import zmtp

    address = free_tcp_address()
    host, port = address[len("tcp://"):].rsplit(":", 1)
    listener = socket.create_server((host, int(port)))
    listener.settimeout(60)
    receiver = daq.start_receiver(address, "-n", "1")
    assert "zmtp reader" in receiver.stderr()
    ring, subscriber = daq.attach()
    for reply in (b"SSH-2.0-OpenSSH_9.2\r\n" + bytes(64),
                  zmtp.greeting(1) + zmtp.encode_ready("PUB")):
        conn, _ = listener.accept()
        with conn:
            conn.sendall(reply)
            while conn.recv(4096):  # until the receiver drops the connection
                pass
    listener.close()
    daq.start_camera(address, "--frames", "50")
    metas = collect(subscriber, 50)
    assert _ids(metas) == list(range(50))
    _check_images(ring, metas, FramePattern((HEIGHT, WIDTH), np.dtype("<u2")))
    stats = _stop_all(daq)
    assert stats["protocol_errors"] == 2
    assert stats["frames_published"] == 50
    log = receiver.stderr()
    assert f"connection 0 to {address} (peer {host}:{port}): not a ZMTP peer" in log
    assert "'PUB' socket; a PULL socket talks to PUSH" in log
    ring.close()
    subscriber.close()
