"""Interoperability with psi-bsread, PSI's reference BSREAD implementation, over real sockets.

psi-bsread's Sender -> raw ZeroMQ PULL -> our decoder, and our encoder -> ZeroMQ PUSH ->
psi-bsread's Source: pixel-exact, pulse ids and timestamps, for every compression.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from bsread import PULL, Sender, Source

from stddaq_common.wire.bsread import (
    BsreadDecoder,
    BsreadEncoder,
    BsreadMessage,
    ChannelSpec,
    decode_value,
    decode_value_into,
)

H, W = 120, 200  # not square: a swapped [W, H] shows up
DEADLINE_MS = 30_000
PULSES = [1000, 1001, 1005]


def frame(pulse_id: int, dtype: str = "<u2") -> np.ndarray:
    return np.random.default_rng(pulse_id).poisson(100, (H, W)).astype(dtype)


def stamp(pulse_id: int) -> tuple[int, int]:
    return 1_700_000_000 + pulse_id, 1000 * pulse_id + 7


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def pull_from_sender() -> Iterator[tuple[int, zmq.Socket[Any]]]:
    """A port for psi-bsread's Sender to bind, and our PULL socket connected to it."""
    port = free_port()
    pull: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PULL)
    pull.linger = 0
    pull.rcvtimeo = DEADLINE_MS
    pull.connect(f"tcp://127.0.0.1:{port}")
    yield port, pull
    pull.close()


def psi_sender(port: int, **options: Any) -> Sender:
    sender = Sender(port=port, address="tcp://127.0.0.1", send_timeout=DEADLINE_MS, **options)
    return sender


def receive(pull: zmq.Socket[Any], decoder: BsreadDecoder, count: int) -> list[BsreadMessage]:
    return [decoder.decode(pull.recv_multipart(copy=False)) for _ in range(count)]


def check_image(message: BsreadMessage, pulse_id: int, dtype: str = "<u2") -> None:
    assert message.pulse_id == pulse_id
    assert message.global_timestamp == stamp(pulse_id)
    assert message.timestamps[0] == stamp(pulse_id)
    slot = np.zeros((H, W), np.dtype(dtype).newbyteorder("<"))
    assert decode_value_into(message.channels[0], message.values[0], slot) == slot.nbytes
    assert np.array_equal(slot, frame(pulse_id, dtype))
    assert np.array_equal(decode_value(message.channels[0], message.values[0]), frame(pulse_id, dtype))


@pytest.mark.parametrize("compression", [None, "bitshuffle_lz4", "lz4"])
@pytest.mark.parametrize("with_metadata", [True, False])
def test_psi_sender_to_our_decoder(
    pull_from_sender: tuple[int, zmq.Socket[Any]], compression: str | None, with_metadata: bool
) -> None:
    port, pull = pull_from_sender
    sender = psi_sender(port, data_compression=compression)
    metadata = {"type": "uint16", "shape": [W, H]} if with_metadata else None
    sender.add_channel("CAM:FPICTURE", metadata=metadata)
    sender.open()
    try:
        for pulse_id in PULSES:
            sender.send(
                data={"CAM:FPICTURE": frame(pulse_id)},
                pulse_id=pulse_id,
                timestamp=stamp(pulse_id),
                check_data=False,
            )
        if with_metadata:
            decoder = BsreadDecoder()
        else:
            decoder = BsreadDecoder(default_type="uint16", default_shape=[W, H])
        messages = receive(pull, decoder, len(PULSES))
    finally:
        sender.close()
    for message, pulse_id in zip(messages, PULSES, strict=True):
        channel = message.channels[0]
        assert channel.name == "CAM:FPICTURE"
        assert channel.compression == (compression or "none")
        assert channel.image_shape == (H, W)
        check_image(message, pulse_id)
    assert decoder.headers_parsed == 1


@pytest.mark.parametrize("dh_compression", ["bitshuffle_lz4", "lz4"])
def test_psi_sender_several_channels_and_compressed_data_header(
    pull_from_sender: tuple[int, zmq.Socket[Any]], dh_compression: str
) -> None:
    port, pull = pull_from_sender
    sender = psi_sender(port, data_compression="bitshuffle_lz4", data_header_compression=dh_compression)
    sender.open()
    try:
        for pulse_id in PULSES:
            data = {
                "CAM:FPICTURE": frame(pulse_id),
                "CAM:TEMP": 20.0 + pulse_id,
                "CAM:NAME": "pco.edge",
                "CAM:SPARE": None,
            }
            sender.send(data=data, pulse_id=pulse_id, timestamp=stamp(pulse_id))
        messages = receive(pull, BsreadDecoder(), len(PULSES))
    finally:
        sender.close()
    for message, pulse_id in zip(messages, PULSES, strict=True):
        check_image(message, pulse_id)
        names = [channel.name for channel in message.channels]
        assert names == ["CAM:FPICTURE", "CAM:TEMP", "CAM:NAME", "CAM:SPARE"]
        assert decode_value(message.channels[1], message.values[1]).tolist() == [20.0 + pulse_id]
        assert decode_value(message.channels[2], message.values[2]).tobytes() == b"pco.edge"
        assert message.values[3] is None and message.timestamps[3] is None


@pytest.mark.parametrize("compression", [None, "bitshuffle_lz4", "lz4"])
def test_psi_sender_big_endian_image(
    pull_from_sender: tuple[int, zmq.Socket[Any]], compression: str | None
) -> None:
    port, pull = pull_from_sender
    sender = psi_sender(port, data_compression=compression)
    sender.open()
    try:
        for pulse_id in PULSES:
            sender.send(
                data={"CAM:FPICTURE": frame(pulse_id, ">u2")}, pulse_id=pulse_id, timestamp=stamp(pulse_id)
            )
        messages = receive(pull, BsreadDecoder(), len(PULSES))
    finally:
        sender.close()
    for message, pulse_id in zip(messages, PULSES, strict=True):
        assert message.channels[0].encoding == "big"
        check_image(message, pulse_id, ">u2")


# --- our encoder -> psi-bsread's Source ---------------------------------------------------


def send_to_psi_source(encoder: BsreadEncoder, values_of: Any) -> list[Any]:
    """Encode a message per pulse, PUSH it, and receive each with psi-bsread's Source."""
    push: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
    push.linger = 0
    push.sndtimeo = DEADLINE_MS
    port = push.bind_to_random_port("tcp://127.0.0.1")
    source = Source(host="127.0.0.1", port=port, mode=PULL, receive_timeout=DEADLINE_MS)
    source.connect()
    try:
        for pulse_id in PULSES:
            push.send_multipart(encoder.encode(pulse_id, stamp(pulse_id), values_of(pulse_id)), copy=False)
        received = [source.receive() for _ in PULSES]
    finally:
        source.disconnect()
        push.close()
    assert all(message is not None for message in received)
    return [message.data for message in received]


@pytest.mark.parametrize("dh_compression", [None, "bitshuffle_lz4", "lz4"])
@pytest.mark.parametrize(
    ("compression", "encoding"),
    [
        ("none", "little"),
        ("bitshuffle_lz4", "little"),
        ("lz4", "little"),
        ("none", "big"),
        ("bitshuffle_lz4", "big"),
    ],
)
def test_our_encoder_to_psi_source(dh_compression: str | None, compression: str, encoding: str) -> None:
    dtype = "<u2" if encoding == "little" else ">u2"
    channels = [
        ChannelSpec.for_image("CAM:FPICTURE", H, W, "uint16", compression=compression, encoding=encoding),
        ChannelSpec("CAM:TEMP"),
    ]
    encoder = BsreadEncoder(channels, dh_compression=dh_compression)
    messages = send_to_psi_source(encoder, lambda pulse_id: [frame(pulse_id, dtype), 20.5 + pulse_id])
    for message, pulse_id in zip(messages, PULSES, strict=True):
        assert message.pulse_id == pulse_id
        assert (message.global_timestamp, message.global_timestamp_offset) == stamp(pulse_id)
        image = message.data["CAM:FPICTURE"]
        assert image.value.shape == (H, W)
        assert np.array_equal(image.value, frame(pulse_id, dtype))
        assert (image.timestamp, image.timestamp_offset) == stamp(pulse_id)
        assert message.data["CAM:TEMP"].value == 20.5 + pulse_id


def test_our_encoder_without_type_and_shape_to_psi_source() -> None:
    """psi-bsread reads a header without type/shape as float64 values: a waveform round-trips."""
    channel = ChannelSpec("CAM:PROFILE", "float64", (64,), compression="bitshuffle_lz4")
    encoder = BsreadEncoder([channel], with_type_and_shape=False)
    messages = send_to_psi_source(encoder, lambda pulse_id: [np.linspace(0, pulse_id, 64)])
    for message, pulse_id in zip(messages, PULSES, strict=True):
        assert np.array_equal(message.data["CAM:PROFILE"].value, np.linspace(0, pulse_id, 64))
