"""The live stream as a real process: producer (ring + metadata) -> live stream -> viewers.

Assertions are structural (which ids, which bytes, which bounds), never about speed; every
wait has a generous deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from bsread import SUB
from bsread.source import Source

from stddaq_common.bus.metadata import Compression, Dtype, ImageMeta
from stddaq_common.bus.metadata_stream import MetadataSubscriber
from tests.live_stream.rig import (
    DEADLINE_S,
    LiveStreamProcess,
    Producer,
    Setup,
    Viewer,
    array10_frame,
    expected_image,
    free_tcp_port,
    make_setup,
    remove_setup,
    running,
    stat_int,
    warm_up,
)

START = 1_000_000
"""First test image id; warm-up images use smaller ids, which the viewer ignores."""


@pytest.fixture
def cleanup() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def _setup(cleanup: contextlib.ExitStack, streams: dict[str, dict[str, object]], **size: int) -> Setup:
    setup = make_setup(streams, **size)  # type: ignore[arg-type]
    cleanup.callback(remove_setup, setup)
    return setup


def _producer(cleanup: contextlib.ExitStack, setup: Setup, suffix: str = "image", **kw: bool) -> Producer:
    producer = Producer(setup, suffix, **kw)
    cleanup.callback(producer.close)
    return producer


def _viewer(cleanup: contextlib.ExitStack, address: str, **kw: int) -> Viewer:
    viewer = Viewer(address, **kw)
    cleanup.callback(viewer.close)
    return viewer


def _collect_until(viewer: Viewer, last_id: int) -> list[list[bytes]]:
    """array-1.0 messages with frame >= START, until the one of `last_id` arrives."""
    messages: list[list[bytes]] = []
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        parts = viewer.receive(200)
        if parts is None:
            continue
        frame = array10_frame(parts)
        if frame >= START:
            messages.append(parts)
        if frame == last_id:
            return messages
    raise AssertionError(f"image {last_id} never arrived; got {[array10_frame(m) for m in messages]}")


def _publish_in_chunks(
    producer: Producer, viewer: Viewer, ids: range, wanted: Sequence[int], chunk: int = 20
) -> list[list[bytes]]:
    """Publish `ids` in chunks, each after the viewer got the wanted ids of the one before.

    ZeroMQ PUB drops what exceeds a viewer's queue (send_hwm images) by design; pacing by
    chunks smaller than that makes the delivered set depend on the rate mode alone.
    """
    messages: list[list[bytes]] = []
    for first in range(0, len(ids), chunk):
        part = ids[first : first + chunk]
        for image_id in part:
            assert producer.publish(image_id)
        expected_here = [i for i in wanted if part[0] <= i <= part[-1]]
        if expected_here:
            messages += _collect_until(viewer, expected_here[-1])
    return messages


def _received_from(viewer: Viewer, first_id: int) -> bool:
    """Drain what the viewer has queued (waiting up to 100 ms); True if an id >= first_id came."""
    found = False
    while (parts := viewer.receive(100)) is not None:
        found = found or array10_frame(parts) >= first_id
    return found


def _upstream_header(height: int, width: int, frame: int) -> bytes:
    # Written out by hand, as std_daq's live stream writes it (comma+space between members).
    text = '{"htype":"array-1.0", "shape":[HEIGHT,WIDTH], "type":"uint16", "frame":FRAME}'
    text = text.replace("HEIGHT", str(height)).replace("WIDTH", str(width))
    return text.replace("FRAME", str(frame)).encode()


def _stop(stream: LiveStreamProcess, *, producer_raced: bool = False) -> dict[str, str]:
    """Stop the stream; no torn or bad image was sent. `producer_raced`: the producer ran
    flat out, so a stream descheduled mid-copy may find a slot overwritten (that image is
    discarded and counted in torn_images), and one descheduled while the writer went
    through half the ring with a frame queued may count torn_on_wire (the documented
    remaining case, slot_sender.py): then each such frame must be counted and logged."""
    assert stream.terminate() == 0, stream.stderr()
    stats = stream.final_stats()
    if producer_raced:
        logged = stream.stderr().count("was overwritten while ZeroMQ sent it from its slot")
        assert stat_int(stats, "torn_on_wire") == logged
    else:
        assert stat_int(stats, "torn_images") == 0
        assert stat_int(stats, "torn_on_wire") == 0
    assert stat_int(stats, "bad_images") == 0
    return stats


def test_forward_sends_every_image_pixel_exact_with_upstream_header_bytes(
    cleanup: contextlib.ExitStack,
) -> None:
    setup = _setup(cleanup, {"fwd": {"type": "forward"}}, height=48, width=64)
    address = setup.addresses["fwd"]
    producer = _producer(cleanup, setup)
    viewer = _viewer(cleanup, address)
    with running(setup, address) as stream:
        warm_up(producer, viewer.receive, itertools.count(1))
        ids = range(START, START + 200)
        messages = _publish_in_chunks(producer, viewer, ids, ids)
        assert [array10_frame(m) for m in messages] == list(ids)
        for image_id, (header, pixels) in zip(ids, messages, strict=True):
            assert header == _upstream_header(48, 64, image_id)
            assert pixels == expected_image(image_id, 48, 64).tobytes()
        stats = _stop(stream)
    assert stat_int(stats, "skipped_by_mode") == 0
    assert stat_int(stats, "images_sent") >= len(ids)


def test_batch_sends_exactly_the_ids_whose_remainder_is_below_y(cleanup: contextlib.ExitStack) -> None:
    setup = _setup(cleanup, {"batch": {"type": "batch", "config": [2, 10]}})
    address = setup.addresses["batch"]
    viewer = _viewer(cleanup, address)
    with running(setup, address) as stream:
        producer = _producer(cleanup, setup)  # the ring appears after the stream started
        warm_up(producer, viewer.receive, itertools.count(0, 10))
        ids = range(START, START + 100)
        wanted = [i for i in ids if i % 10 < 2]
        messages = _publish_in_chunks(producer, viewer, ids, wanted)
        assert [array10_frame(m) for m in messages] == wanted
        assert all(m[1] == expected_image(array10_frame(m), 64, 64).tobytes() for m in messages)
        stats = _stop(stream)
    handled = wanted[-1] - START + 1  # ids after the last wanted one may not be handled yet
    assert stat_int(stats, "skipped_by_mode") >= handled - len(wanted)


def test_periodic_sends_at_most_y_per_window_and_the_first_of_a_fresh_window(
    cleanup: contextlib.ExitStack,
) -> None:
    y, n = 2, 4  # the first 2 images of every 250 ms
    setup = _setup(cleanup, {"periodic": {"type": "periodic", "config": [y, n]}})
    address = setup.addresses["periodic"]
    producer = _producer(cleanup, setup)
    viewer = _viewer(cleanup, address)
    with running(setup, address) as stream:
        warm_up(producer, viewer.receive, itertools.count(1))
        time.sleep(2.0 / n)  # the burst starts in a window no warm-up image used
        burst = range(START, START + 40)
        began = time.monotonic()
        for image_id in burst:
            assert producer.publish(image_id)
            time.sleep(0.01)
        # Sentinels a fresh window apart until one arrives: then the stream has handled the burst.
        received: list[int] = []
        sentinels = itertools.count(START + 10_000)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and not any(i >= START + 10_000 for i in received):
            time.sleep(2.0 / n)
            producer.publish(next(sentinels))
            while (parts := viewer.receive(2000 // n)) is not None:
                received.append(array10_frame(parts))
        handled_by = time.monotonic()
        got = [i for i in received if START <= i < START + 10_000]
        # The stream handled the burst between `began` and `handled_by`: at most Y per window.
        windows = math.ceil((handled_by - began) * n) + 1
        assert 1 <= len(got) <= y * windows, (got, windows)
        assert got[0] == burst[0]
        assert got == sorted(got)
        _stop(stream)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw-ring", "bitshuffle-ring"])
def test_bsread_mode_is_read_by_psi_bsread(cleanup: contextlib.ExitStack, compressed: bool) -> None:
    suffix = "h5bitshuffle-lz4" if compressed else "image"
    setup = _setup(cleanup, {"bsread": {"type": "forward"}}, height=32, width=48)
    address = setup.addresses["bsread"]
    producer = _producer(cleanup, setup, suffix, compressed=compressed)
    port = int(address.rsplit(":", 1)[1])
    source = Source(host="127.0.0.1", port=port, mode=SUB, receive_timeout=100)
    source.connect()
    cleanup.callback(source.disconnect)
    with running(setup, address, "-t", "bsread", "-s", suffix, "--bsread-channel", "CAM:FPICTURE") as stream:
        warm_up(producer, lambda _ms: source.receive(), itertools.count(1))
        ids = range(START, START + 20)
        for image_id in ids:
            assert producer.publish(image_id)
        got: dict[int, np.ndarray] = {}
        deadline = time.monotonic() + DEADLINE_S
        while ids[-1] not in got and time.monotonic() < deadline:
            message = source.receive()
            if message is not None and message.data.pulse_id >= START:
                got[message.data.pulse_id] = message.data.data["CAM:FPICTURE"].value
        assert sorted(got) == list(ids)
        for image_id, value in got.items():
            assert value.shape == (32, 48)
            assert value.dtype == np.uint16
            assert np.array_equal(value, expected_image(image_id, 32, 48))
        _stop(stream)


def test_array10_from_a_compressed_ring_sends_raw_pixels(cleanup: contextlib.ExitStack) -> None:
    setup = _setup(cleanup, {"fwd": {"type": "forward"}})
    address = setup.addresses["fwd"]
    producer = _producer(cleanup, setup, "h5bitshuffle-lz4", compressed=True)
    viewer = _viewer(cleanup, address)
    with running(setup, address, "-s", "h5bitshuffle-lz4") as stream:
        warm_up(producer, viewer.receive, itertools.count(1))
        ids = range(START, START + 30)
        messages = _publish_in_chunks(producer, viewer, ids, ids)
        assert [array10_frame(m) for m in messages] == list(ids)
        for image_id, (header, pixels) in zip(ids, messages, strict=True):
            assert header == _upstream_header(64, 64, image_id)
            assert pixels == expected_image(image_id, 64, 64).tobytes()
        _stop(stream)


def test_a_viewer_that_never_reads_costs_the_acquisition_nothing(cleanup: contextlib.ExitStack) -> None:
    height, width = 256, 256  # 128 KiB images; 3000 of them are 375 MiB through the stream
    setup = _setup(cleanup, {"fwd": {"type": "forward"}}, height=height, width=width)
    address = setup.addresses["fwd"]
    producer = _producer(cleanup, setup)
    # The acquisition: reads and checks every image from the ring as a writer would.
    acquisition = MetadataSubscriber.for_config(setup.config)
    cleanup.callback(acquisition.close)
    active = _viewer(cleanup, address)
    stalled = _viewer(cleanup, address, rcvhwm=1, rcvbuf=4096)
    with running(setup, address) as stream:
        warm_up(producer, active.receive, itertools.count(1))
        warm_up(producer, lambda _ms: stalled.socket.poll(100) or None, itertools.count(1000))
        rss_before = stream.rss_anon_kib()
        ids = range(START, START + 3000)
        recorded: list[int] = []
        buffer = bytearray(height * width * 2)
        active_got = 0

        def record(meta: ImageMeta | None) -> None:
            if meta is not None and meta.image_id >= START:  # late warm-up images are not recorded
                assert producer.ring.read_into(meta.image_id, buffer) == len(buffer)
                assert buffer == expected_image(meta.image_id, height, width).tobytes()
                recorded.append(meta.image_id)

        for image_id in ids:
            assert producer.publish(image_id), "the acquisition's metadata publish was refused"
            while (meta := acquisition.receive(0)) is not None:
                record(meta)
            while active.receive(0) is not None:
                active_got += 1
        deadline = time.monotonic() + DEADLINE_S
        while len(recorded) < len(ids) and time.monotonic() < deadline:
            record(acquisition.receive(100))
        assert recorded == list(ids), "the acquisition lost images"
        assert producer.publisher.dropped == 0
        rss_after = stream.rss_anon_kib()
        # The stalled viewer's queue holds at most send_hwm images (100 x 128 KiB here).
        assert rss_after - rss_before < 48 * 1024, (rss_before, rss_after)
        # The active viewer is still served: a sentinel reaches it although the stalled one never
        # reads (and once it has, the stream has handled every image before it).
        sentinels = itertools.count(START + 10_000)
        deadline = time.monotonic() + DEADLINE_S
        while not _received_from(active, START + 10_000):
            assert time.monotonic() < deadline, "no sentinel reached the active viewer"
            producer.publish(next(sentinels))
        stats = _stop(stream, producer_raced=True)
    assert active_got > 0
    assert stat_int(stats, "images_seen") >= len(ids)


def test_address_missing_from_the_config_is_one_clear_line(cleanup: contextlib.ExitStack) -> None:
    setup = _setup(cleanup, {"a": {"type": "forward"}, "b": {"type": "batch", "config": [1, 10]}})
    missing = f"tcp://127.0.0.1:{free_tcp_port()}"
    stream = LiveStreamProcess(setup, missing)
    cleanup.callback(stream.close)
    status = stream.wait_exit()
    lines = [line for line in stream.stderr().splitlines() if line.strip()]
    assert status != 0
    assert len(lines) == 1, lines
    for configured in setup.addresses.values():
        assert configured in lines[0]
    assert missing in lines[0] and "live_stream_configs" in lines[0]


def test_sigterm_stops_an_idle_stream_with_status_zero(cleanup: contextlib.ExitStack) -> None:
    setup = _setup(cleanup, {"fwd": {"type": "forward"}})
    with running(setup, setup.addresses["fwd"]) as stream:  # no ring, no producer: idle
        assert stream.terminate() == 0, stream.stderr()
        stats = stream.final_stats()  # a final stats line is logged on the way out
    assert stat_int(stats, "images_seen") == 0


def test_bad_images_are_counted_and_named_and_the_stream_carries_on(cleanup: contextlib.ExitStack) -> None:
    setup = _setup(cleanup, {"fwd": {"type": "forward"}})
    address = setup.addresses["fwd"]
    producer = _producer(cleanup, setup)
    viewer = _viewer(cleanup, address)
    with running(setup, address) as stream:
        warm_up(producer, viewer.receive, itertools.count(1))
        producer.ring.write(START, b"\x01" * 100)  # the metadata below claims 64 x 64 uint16
        assert producer.publisher.publish(ImageMeta(START, 64, 64, 100, Dtype.UINT16))
        producer.ring.write(START + 1, b"\x01" * 64)  # "compressed" bytes that are no chunk
        assert producer.publisher.publish(
            ImageMeta(START + 1, 64, 64, 64, Dtype.UINT16, compression=Compression.H5BITSHUFFLE_LZ4)
        )
        assert producer.publish(START + 2)
        messages = _collect_until(viewer, START + 2)
        assert [array10_frame(m) for m in messages] == [START + 2]
        assert stream.terminate() == 0
        stats = stream.final_stats()
        log = stream.stderr()
    assert stat_int(stats, "bad_images") == 2
    assert f"image {START} not streamed: slot holds 100 bytes, but 64 x 64 uint16 needs 8192" in log
