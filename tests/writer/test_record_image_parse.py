"""parse_record_image (the writer's hot-path reading of RecordImage) agrees with
parse_command on every message: the same (metadata, acq_id, index) where it reads one,
None (parse_command decides) for everything else, and never an exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stddaq_common.bus.driver_writer import (
    CloseCommand,
    ImageBatchCommand,
    ImageCommand,
    ProtocolError,
    encode_command,
    encode_image,
    encode_image_batch,
    parse_command,
    parse_record_image,
    parse_record_images,
)

ids = st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1))


def _changed(message: bytes, data: st.DataObject) -> bytes:
    """`message` with one to three drawn changes: a byte set, the tail cut, bytes appended."""
    raw = bytearray(message)
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["flip", "cut", "append"]))
        if what == "flip" and raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        elif what == "cut" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)) :]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=4))
    return bytes(raw)


def _agrees(data: bytes) -> None:
    fast = parse_record_image(data)
    if fast is None:
        return
    command = parse_command(data)
    assert isinstance(command, ImageCommand)
    assert fast == (command.metadata, command.acq_id, command.index)


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=1, max_size=100), st.one_of(st.none(), ids), ids)
def test_what_the_driver_sends_is_read_as_parse_command_reads_it(
    metadata: bytes, acq_id: int | None, index: int
) -> None:
    data = encode_image(metadata, acq_id, None if acq_id is None else index)
    fast = parse_record_image(data)
    if len(data) < 128:  # every short RecordImage is read here
        assert fast is not None
    _agrees(data)


@settings(max_examples=1500, deadline=None)
@given(st.binary(min_size=1, max_size=60), ids, ids, st.data())
def test_changed_bytes_are_read_alike_or_left_to_parse_command(
    metadata: bytes, acq_id: int, index: int, data: st.DataObject
) -> None:
    message = _changed(encode_image(metadata, acq_id, index), data)
    try:
        parse_command(message)
    except ProtocolError:
        assert parse_record_image(message) is None
        return
    _agrees(message)


def test_other_commands_are_left_to_parse_command() -> None:
    for data in (
        encode_image_batch([b"\x08\x01", b"\x08\x02"], 3, 10),
        encode_command(CloseCommand(3, 10, "done")),
        encode_image(b"x" * 200, 1, 2),  # longer than one-byte lengths
        b"",
    ):
        assert parse_record_image(data) is None


def _batch_agrees(data: bytes) -> None:
    fast = parse_record_images(data)
    if fast is None:
        return
    command = parse_command(data)
    assert isinstance(command, ImageBatchCommand)
    assert (tuple(fast[0]), fast[1], fast[2]) == (
        command.metadata, command.acq_id, command.first_index
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=5), ids, ids)
def test_every_batch_the_driver_sends_is_read_as_parse_command_reads_it(
    metadata: list[bytes], acq_id: int, first: int
) -> None:
    data = encode_image_batch(metadata, acq_id, first)
    fast = parse_record_images(data)
    assert fast == (metadata, acq_id, first)
    _batch_agrees(data)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=150), min_size=1, max_size=3), ids, ids, st.data())
def test_changed_batch_bytes_are_read_alike_or_left_to_parse_command(
    metadata: list[bytes], acq_id: int, first: int, data: st.DataObject
) -> None:
    message = _changed(encode_image_batch(metadata, acq_id, first), data)
    try:
        parse_command(message)
    except ProtocolError:
        assert parse_record_images(message) is None
        return
    _batch_agrees(message)


def test_other_commands_are_not_read_as_batches() -> None:
    for data in (
        encode_image(b"\x08\x01", 1, 2),
        encode_command(CloseCommand(3, 10, "done")),
        encode_image_batch([b"\x08\x01", b""], 3, 10),  # an empty entry: parse_command refuses it
        b"",
        b"\xca\x3e",
    ):
        assert parse_record_images(data) is None
