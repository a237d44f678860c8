"""Copying images out of ring slots for sending: exact bytes, torn copies discarded, pool reuse."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from stddaq_common.ring.geometry import RingGeometry
from stddaq_common.ring.image_ring import ImageRing
from stddaq_common.wire.compression import bitshuffle_lz4_compress
from stddaq_common.wire.errors import WireFormatError
from stddaq_live_stream.image_copy import SMALL_IMAGE_BYTES, ImageCopier, NotCopied

SLOT_BYTES = 256 * 1024
N_SLOTS = 8


@pytest.fixture
def ring() -> Iterator[ImageRing]:
    with ImageRing.create(f"lscopy{os.getpid()}", RingGeometry(SLOT_BYTES, N_SLOTS)) as owner:
        yield owner


def _pixels(image_id: int, nbytes: int = SLOT_BYTES) -> bytes:
    return np.random.default_rng(image_id).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def _view(ring: ImageRing, image_id: int):  # type: ignore[no-untyped-def]
    view = ring.view(image_id)
    assert view is not None
    return view


def test_large_image_goes_through_a_pool_buffer_byte_exact(ring: ImageRing) -> None:
    copier = ImageCopier(SLOT_BYTES, max_buffers=4)
    ring.write(3, _pixels(3))
    frame = copier.copy_out(_view(ring, 3))
    assert isinstance(frame, zmq.Frame)
    assert frame.bytes == _pixels(3)
    assert frame.tracker is not None  # zero-copy from the pool, tracked
    assert copier.pool.size == 1


def test_small_image_is_copied_into_a_new_message(ring: ImageRing) -> None:
    copier = ImageCopier(SLOT_BYTES, max_buffers=4)
    small = _pixels(5, SMALL_IMAGE_BYTES // 2)
    ring.write(5, small)
    frame = copier.copy_out(_view(ring, 5))
    assert isinstance(frame, zmq.Frame) and frame.bytes == small
    assert copier.pool.size == 0


@pytest.mark.parametrize("nbytes", [SLOT_BYTES, 1000], ids=["pool", "small"])
def test_a_slot_overwritten_before_the_check_is_discarded(ring: ImageRing, nbytes: int) -> None:
    copier = ImageCopier(SLOT_BYTES, max_buffers=1)
    ring.write(1, _pixels(1, nbytes))
    view = _view(ring, 1)
    ring.write(1 + N_SLOTS, _pixels(2, nbytes))  # the writer laps the ring meanwhile
    assert copier.copy_out(view) is NotCopied.TORN
    ring.write(2, _pixels(3))
    frame = copier.copy_out(_view(ring, 2))  # the discarded copy left its buffer free
    assert isinstance(frame, zmq.Frame) and frame.bytes == _pixels(3)


def test_when_every_buffer_is_queued_the_image_is_not_copied(ring: ImageRing) -> None:
    copier = ImageCopier(SLOT_BYTES, max_buffers=2)
    held = []
    for image_id in range(2):
        ring.write(image_id, _pixels(image_id))
        frame = copier.copy_out(_view(ring, image_id))
        assert isinstance(frame, zmq.Frame)
        held.append(frame)  # still referenced: ZeroMQ would still be sending it
    ring.write(2, _pixels(2))
    assert copier.copy_out(_view(ring, 2)) is NotCopied.NO_BUFFER
    assert copier.pool.size == 2
    assert [f.bytes for f in held] == [_pixels(i) for i in range(2)]


def test_without_a_pool_every_image_is_a_new_message(ring: ImageRing) -> None:
    copier = ImageCopier(SLOT_BYTES, max_buffers=0)
    held = []
    for image_id in range(3):
        ring.write(image_id, _pixels(image_id))
        frame = copier.copy_out(_view(ring, image_id))
        assert isinstance(frame, zmq.Frame) and frame.tracker is None
        held.append(frame)
    assert [f.bytes for f in held] == [_pixels(i) for i in range(3)]


def test_a_buffer_is_reused_once_zeromq_is_done_with_it(ring: ImageRing) -> None:
    copier = ImageCopier(SLOT_BYTES, max_buffers=1)
    context = zmq.Context()
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    try:
        pull.bind("inproc://copy-reuse")
        push.connect("inproc://copy-reuse")
        for image_id in range(5):
            ring.write(image_id, _pixels(image_id))
            frame = copier.copy_out(_view(ring, image_id))
            assert isinstance(frame, zmq.Frame)
            push.send(frame)
            del frame
            assert pull.recv() == _pixels(image_id)
            deadline = time.monotonic() + 10
            while not copier.pool._buffers[0].free and time.monotonic() < deadline:
                gc.collect()
                time.sleep(0.001)
        assert copier.pool.size == 1
    finally:
        push.close(0)
        pull.close(0)
        context.term()


def test_decompress_out_gives_the_raw_pixels(ring: ImageRing) -> None:
    copier = ImageCopier(SLOT_BYTES, max_buffers=2)
    image = np.frombuffer(_pixels(9, 200 * 1024), np.uint16)
    ring.write(9, bitshuffle_lz4_compress(image))
    frame = copier.decompress_out(_view(ring, 9), np.dtype("<u2"), image.nbytes)
    assert isinstance(frame, zmq.Frame) and frame.bytes == image.tobytes()


def test_decompress_out_rejects_a_corrupt_chunk_with_a_reason(ring: ImageRing) -> None:
    copier = ImageCopier(SLOT_BYTES, max_buffers=2)
    ring.write(4, b"\x00\x00\x00\x00\x00\x01\x00\x00" + b"\x00\x00\x20\x00" + b"\xff" * 64)
    with pytest.raises(WireFormatError) as caught:
        copier.decompress_out(_view(ring, 4), np.dtype("<u2"), 65536)
    assert caught.value.reason
