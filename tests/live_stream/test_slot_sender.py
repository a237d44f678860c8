"""Slot frames sent straight to libzmq: exact bytes, every release reported, keys never mixed up.

Real rings and real ZeroMQ sockets; waits are bounded by a deadline, never asserted on.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zmq

from stddaq_common.bus.pinned_send import PinnedBuffer, PinnedSender, release_key, release_notices
from stddaq_common.ring.geometry import RingGeometry
from stddaq_common.ring.image_ring import ImageRing, SlotView
from stddaq_live_stream.slot_sender import SlotSender
from stddaq_live_stream.viewer_socket import ViewerSocket

SLOT_BYTES = 256 * 1024
N_SLOTS = 16
DEADLINE_S = 20.0

pytestmark = pytest.mark.skipif(release_notices() is None, reason="libzmq's C functions are not reachable")


@pytest.fixture
def ring() -> Iterator[ImageRing]:
    name = f"lsslot{os.getpid()}{uuid.uuid4().hex[:6]}"
    with ImageRing.create(name, RingGeometry(SLOT_BYTES, N_SLOTS)) as owner:
        yield owner


def _pixels(image_id: int) -> bytes:
    return np.random.default_rng(image_id).integers(0, 256, SLOT_BYTES, dtype=np.uint8).tobytes()


def _view(ring: ImageRing, image_id: int) -> SlotView:
    view = ring.view(image_id)
    assert view is not None
    return view


def _refuse(frame: PinnedBuffer) -> None:
    """Hand the frame to libzmq on a PUSH socket nobody is connected to: refused (EAGAIN),
    and libzmq lets go of it at once."""
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    try:
        push.bind("inproc://refuse-" + uuid.uuid4().hex)
        with pytest.raises(zmq.Again):
            PinnedSender(push).send(frame, zmq.NOBLOCK)
    finally:
        push.close(linger=0)
        context.term()


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "timed out (a hang, not a speed check)"
        time.sleep(0.001)


@pytest.fixture
def viewer_pair() -> Iterator[tuple[ViewerSocket, zmq.Socket[bytes]]]:
    address = "inproc://slot-sender-" + uuid.uuid4().hex
    viewers = ViewerSocket(address, send_hwm=100)
    sub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, int(DEADLINE_S * 1000))
    sub.connect(address)
    _until(lambda: (viewers.poll_subscriptions(), viewers.has_viewers)[1])
    yield viewers, sub
    sub.close(linger=0)
    viewers.close()


def test_native_frames_arrive_byte_exact_and_every_release_is_reported(
    ring: ImageRing, viewer_pair: tuple[ViewerSocket, zmq.Socket[bytes]]
) -> None:
    viewers, sub = viewer_pair
    sender = SlotSender()
    assert sender.native
    for image_id in range(8):
        ring.write(image_id, _pixels(image_id))
        view = _view(ring, image_id)
        assert sender.can_send(view, ring)
        frame = sender.frame(view)
        assert isinstance(frame, PinnedBuffer) and frame.tracked
        assert viewers.send([b"header %d" % image_id, frame])
    for image_id in range(8):
        assert sub.recv_multipart() == [b"header %d" % image_id, _pixels(image_id)]
    _until(lambda: not sender.reap(ring) and sender.in_flight == 0)
    assert sender.torn_on_wire == 0


def test_a_slot_overwritten_while_queued_is_counted_torn_on_wire(ring: ImageRing) -> None:
    """The check after the release works: a frame whose slot changed meanwhile is counted."""
    sender = SlotSender()
    ring.write(0, _pixels(0))
    frame = sender.frame(_view(ring, 0))
    assert isinstance(frame, PinnedBuffer)
    ring.write(N_SLOTS, _pixels(N_SLOTS))  # the same slot, rewritten while the frame is held
    _refuse(frame)
    _until(lambda: (sender.reap(ring), sender.in_flight == 0)[1])
    assert sender.torn_on_wire == 1


def test_a_dropped_queue_keeps_its_keys_until_libzmq_lets_go(ring: ImageRing) -> None:
    """After a reset, a slot whose old frame is not yet released is copied, not re-sent from
    the slot: a late release can never be taken for the new frame's."""
    sender = SlotSender()
    ring.write(0, _pixels(0))
    view = _view(ring, 0)
    frame = sender.frame(view)
    assert isinstance(frame, PinnedBuffer)
    sender.dropped()  # the socket was closed before the frame was even sent
    assert sender.in_flight == 1  # owed: libzmq may still hold it
    assert sender.frame(view) is None  # its key is taken: copy instead
    _refuse(frame)  # the release comes
    _until(lambda: (sender.reap(ring), sender.in_flight == 0)[1])
    assert sender.torn_on_wire == 0  # a dropped frame is not checked: it never reached a viewer
    assert isinstance(sender.frame(view), PinnedBuffer)


def test_release_keys_are_the_low_32_bits_of_the_address() -> None:
    assert release_key(0x7F12_3456_789A) == 0x3456_789A


def test_the_pyzmq_fallback_tracks_frames_too(
    ring: ImageRing, viewer_pair: tuple[ViewerSocket, zmq.Socket[bytes]]
) -> None:
    viewers, sub = viewer_pair
    sender = SlotSender(native=False)
    assert not sender.native
    for image_id in range(4):
        ring.write(image_id, _pixels(image_id))
        frame = sender.frame(_view(ring, image_id))
        assert isinstance(frame, zmq.Frame)
        assert viewers.send([b"h", frame])
        del frame
    for image_id in range(4):
        assert sub.recv_multipart()[1] == _pixels(image_id)
    _until(lambda: not sender.reap(ring) and sender.in_flight == 0)
    assert sender.torn_on_wire == 0


def _send_refused(sender: SlotSender, ring: ImageRing, image_id: int) -> None:
    """Write image `image_id`, track its slot and have libzmq let go of it at once."""
    ring.write(image_id, _pixels(image_id))
    frame = sender.frame(_view(ring, image_id))
    assert isinstance(frame, PinnedBuffer)
    _refuse(frame)


def test_a_cheap_reap_checks_a_released_frame_before_the_writer_moves_on(ring: ImageRing) -> None:
    """Per message the release notices are read: a frame ZeroMQ let go of is checked while its
    slot still holds its image, so the writer going round the ring afterwards counts no
    false torn_on_wire."""
    sender = SlotSender(max_in_flight=8)
    _send_refused(sender, ring, 0)
    _send_refused(sender, ring, 1)
    assert not sender.reap(ring, full=False)
    assert sender.in_flight == 0
    for image_id in range(2, 2 + 2 * N_SLOTS):  # the writer laps the ring twice
        ring.write(image_id, _pixels(image_id))
        assert not sender.reap(ring, full=False)
    assert sender.torn_on_wire == 0


def test_a_full_reap_reads_every_notice(ring: ImageRing) -> None:
    sender = SlotSender(max_in_flight=8)
    _send_refused(sender, ring, 0)
    assert not sender.reap(ring)
    assert sender.in_flight == 0 and sender.torn_on_wire == 0


def test_send_from_slot_delivers_header_and_exact_slot_bytes_and_reports_the_release(
    ring: ImageRing, viewer_pair: tuple[ViewerSocket, zmq.Socket[bytes]]
) -> None:
    viewers, sub = viewer_pair
    sender = SlotSender()
    for image_id in range(4):
        ring.write(image_id, _pixels(image_id))
        view = _view(ring, image_id)
        assert sender.take(view)
        assert viewers.send_from_slot(b'{"frame":%d}' % image_id, view.address, view.nbytes)
    for image_id in range(4):
        assert sub.recv_multipart() == [b'{"frame":%d}' % image_id, _pixels(image_id)]
    _until(lambda: not sender.reap(ring) and sender.in_flight == 0)
    assert sender.torn_on_wire == 0


def test_a_refused_send_after_header_sends_nothing_and_owes_no_release(ring: ImageRing) -> None:
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    try:
        push.bind("inproc://refuse-" + uuid.uuid4().hex)  # no peer: every send is refused
        ring.write(0, _pixels(0))
        view = _view(ring, 0)
        notices = release_notices()
        assert notices is not None
        notices.drain()
        assert not PinnedSender(push).send_after_header(b"header", view.address, view.nbytes)
        assert release_key(view.address) not in notices.drain()
    finally:
        push.close(linger=0)
        context.term()


def test_a_failed_send_keeps_its_key_owed_until_its_release(ring: ImageRing) -> None:
    """A send that failed with an error (not EAGAIN) may or may not hold the slot: the key
    is not reused until a release for it comes."""
    sender = SlotSender()
    ring.write(0, _pixels(0))
    view = _view(ring, 0)
    assert sender.take(view)
    sender.failed()
    assert sender.in_flight == 1
    assert not sender.take(view)  # copied, never sent from the slot again yet
    _refuse(PinnedBuffer(view.address, view.nbytes, view.data, tracked=True))  # the release comes
    _until(lambda: (sender.reap(ring), sender.in_flight == 0)[1])
    assert sender.take(view)
