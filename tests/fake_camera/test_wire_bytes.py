"""The camera's fast path (templated headers, pinned values sent as libzmq constant
messages) puts exactly the bytes of the generic encoders on the wire."""

from __future__ import annotations

import itertools
import json
import threading

import numpy as np
import pytest
import zmq

from stddaq_common.bus.pinned_send import PinnedBuffer, PinnedSender, pin
from stddaq_common.wire.array10 import encode_array10
from stddaq_common.wire.bsread import BsreadEncoder, ChannelSpec, bsread_type_of
from stddaq_fake_camera.camera import FakeCamera, StopFlag
from stddaq_fake_camera.frames import FramePattern
from stddaq_fake_camera.messages import MessageMaker
from stddaq_fake_camera.schedule import SendKind

SHAPE = (12, 20)
STAMP = (1_700_000_123, 456_789)


def reference_parts(
    pattern: FramePattern, compression: str, with_type_and_shape: bool, pulse_id: int, stamp: tuple[int, int]
) -> list[bytes]:
    """The message as the generic BsreadEncoder makes it (it compresses the value itself)."""
    dtype = pattern.dtype
    encoding = "big" if dtype.byteorder == ">" else "little"
    channel = ChannelSpec.for_image("pco:FPICTURE", *SHAPE, bsread_type_of(dtype), encoding=encoding,
                                    compression=compression)
    encoder = BsreadEncoder([channel], with_type_and_shape=with_type_and_shape)
    return [bytes(part) for part in encoder.encode(pulse_id, stamp, [pattern.frame(pulse_id)])]


def as_bytes(part: object) -> bytes:
    return bytes(part.view) if isinstance(part, PinnedBuffer) else bytes(part)  # type: ignore[call-overload]


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "u1", "<f4"])
@pytest.mark.parametrize("compression", ["none", "bitshuffle_lz4", "lz4"])
@pytest.mark.parametrize("with_type_and_shape", [True, False])
def test_bsread_wire_parts_are_the_encoders_bytes(
    dtype: str, compression: str, with_type_and_shape: bool
) -> None:
    pattern = FramePattern(SHAPE, np.dtype(dtype), period=31)
    maker = MessageMaker(pattern, compression=compression,  # type: ignore[arg-type]
                         with_type_and_shape=with_type_and_shape)
    for pulse_id in (0, 5, 30, 31, 2**64 - 1):
        parts = maker.wire_parts(pulse_id, SendKind.FRAME, STAMP)
        expected = reference_parts(pattern, compression, with_type_and_shape, pulse_id, STAMP)
        assert [as_bytes(part) for part in parts] == expected
        assert [bytes(part) for part in maker.parts(pulse_id, SendKind.FRAME, STAMP)] == expected
    assert isinstance(parts[2], PinnedBuffer)  # the value goes out without a copy


def test_array10_wire_parts_are_the_encoders_bytes() -> None:
    pattern = FramePattern(SHAPE, np.dtype(">u2"), period=31)
    maker = MessageMaker(pattern, input_format="array-1.0")
    for pulse_id in (0, 9, 40):
        parts = maker.wire_parts(pulse_id, SendKind.FRAME, STAMP)
        expected = [bytes(part) for part in encode_array10(pattern.frame(pulse_id), pulse_id)]
        assert [as_bytes(part) for part in parts] == expected


def test_an_uncached_compressed_value_is_sent_as_bytes() -> None:
    maker = MessageMaker(FramePattern(SHAPE, np.dtype("<u2"), period=31), compression="lz4", cache_bytes=0)
    value = maker.wire_parts(3, SendKind.FRAME, STAMP)[2]
    assert isinstance(value, bytes)
    assert maker.compressed is not None and maker.compressed.cached_bytes == 0


def test_pinned_parts_are_bounded_and_pin_keeps_the_buffer() -> None:
    pinned = pin(np.arange(10, dtype="<u2"))
    assert pinned.nbytes == 20 and bytes(pinned.part(4, 4).view) == bytes([2, 0, 3, 0])
    with pytest.raises(ValueError, match="not within"):
        pinned.part(18, 4)
    with pytest.raises(ValueError, match="contiguous"):
        pin(np.arange(10, dtype="<u2")[::2])


def test_a_refused_pinned_send_raises_again_and_sends_nothing() -> None:
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    try:
        push.bind("inproc://pinned-again")  # nobody connected: a PUSH cannot send
        sender = PinnedSender(push)
        with pytest.raises(zmq.Again):
            sender.send(pin(b"x" * 100_000), zmq.NOBLOCK)
    finally:
        push.close(linger=0)
        context.term()


@pytest.mark.parametrize(("socket_type", "dtype", "compression"),
                         [("push", "<u2", "none"), ("push", ">u2", "bitshuffle_lz4"), ("pub", "<u2", "none")])
def test_the_bytes_on_the_wire_are_the_encoders(socket_type: str, dtype: str, compression: str) -> None:
    """A real camera socket, a real peer: every part of 40 messages, byte for byte."""
    pattern = FramePattern(SHAPE, np.dtype(dtype), period=31)
    maker = MessageMaker(pattern, compression=compression)  # type: ignore[arg-type]
    camera = FakeCamera("tcp://127.0.0.1:*", maker, socket_type=socket_type)
    context = zmq.Context()
    peer = context.socket(zmq.SUB if socket_type == "pub" else zmq.PULL)
    peer.setsockopt(zmq.RCVTIMEO, 10_000)
    if socket_type == "pub":
        peer.setsockopt(zmq.SUBSCRIBE, b"")
    peer.connect(camera.endpoint)
    stop = StopFlag()
    endless = ((pulse_id, SendKind.FRAME) for pulse_id in itertools.count())
    # A PUB drops what no subscriber takes yet: paced, it keeps sending until 40 arrived.
    rate_hz = 1000.0 if socket_type == "pub" else 0.0
    sender = threading.Thread(target=camera.run, args=(endless, rate_hz, stop))
    sender.start()
    try:
        received = [peer.recv_multipart() for _ in range(40)]
    finally:
        stop.event.set()
        sender.join(10)
        peer.close(linger=0)
        context.term()
        camera.close(0.0)
    first = json.loads(received[0][0])["pulse_id"]
    if socket_type == "push":
        assert first == 0
    for pulse_id, parts in enumerate(received, start=first):
        main = json.loads(parts[0])
        assert main["pulse_id"] == pulse_id
        stamp = (main["global_timestamp"]["sec"], main["global_timestamp"]["ns"])
        assert parts == reference_parts(pattern, compression, True, pulse_id, stamp)
