"""RecordImages, stddaq's batch of images for one writer: the bytes the generated code
makes, parsed back into the RecordImage each entry stands for, and sent by the driver's
WriterLink over real ZeroMQ sockets only to a writer that announced it takes them."""

from __future__ import annotations

import shutil
import uuid

import pytest
import zmq

from stddaq_common._proto import stddaq_driver_writer_pb2 as ours_pb
from stddaq_common.bus.driver_writer import (
    EventKind,
    ImageBatchCommand,
    ImageCommand,
    ProtocolError,
    encode_event,
    encode_image_batch,
    parse_command,
    parse_response,
    writer_address,
)
from stddaq_common.bus.metadata import Dtype, ImageMeta, encode_image_metadata
from stddaq_driver.writer_link import WriterLink
from tests.driver.harness import short_tmp_dir

METAS = [encode_image_metadata(ImageMeta(2**40 + k, 32, 48, 32 * 48 * 2, Dtype.UINT16)) for k in range(3)]


def test_hand_built_record_images_is_the_generated_codes_bytes() -> None:
    expected = ours_pb.WriterAction()
    expected.record_images.acquisition_id = 7
    expected.record_images.first_index = 2**33
    expected.record_images.image_metadata.extend(METAS)
    assert encode_image_batch(METAS, 7, 2**33) == expected.SerializeToString()


def test_a_batch_parses_into_the_record_images_it_stands_for() -> None:
    command = parse_command(encode_image_batch(METAS, 9, 4))
    assert command == ImageBatchCommand(tuple(METAS), 9, 4)
    assert isinstance(command, ImageBatchCommand)
    assert command.images() == [ImageCommand(METAS[k], 9, 4 + k) for k in range(3)]


def test_a_batch_with_an_empty_entry_is_refused() -> None:
    with pytest.raises(ProtocolError, match="empty image_metadata"):
        parse_command(encode_image_batch([METAS[0], b""], 9, 0))


def test_the_announcement_travels_in_the_event_and_is_off_by_default() -> None:
    on = parse_response(encode_event(1, EventKind.HEARTBEAT, batches=True)).event
    off = parse_response(encode_event(1, EventKind.HEARTBEAT)).event
    assert on is not None and on.batches
    assert off is not None and not off.batches


@pytest.mark.parametrize("announces", [True, False])
def test_the_link_sends_one_batch_only_to_a_writer_that_announced_it(announces: bool) -> None:
    """A stddaq writer that says `batches` gets one RecordImages; one that does not (and a
    std_daq writer) gets one RecordImage per image, positions in a row either way."""
    ipc_dir = short_tmp_dir()
    detector = f"b{uuid.uuid4().hex[:8]}"
    context = zmq.Context.instance()
    answers = context.socket(zmq.PUSH)
    answers.bind(writer_address(detector, 0, str(ipc_dir)))
    link = WriterLink(detector, str(ipc_dir), 1)
    commands = context.socket(zmq.PULL)
    commands.connect(f"ipc://{ipc_dir}/{detector}-driver-0")
    try:
        answers.send(encode_event(0, EventKind.HEARTBEAT, batches=announces))
        events = []
        for _ in range(500):  # until the heartbeat is in (a deadline against a hang)
            events = link.receive_events()
            if events:
                break
            link.wait_for_event(20)
        assert [e.batches for e in events] == [announces]
        link.send_images(0, 5, 3, list(METAS))
        received = []
        while commands.poll(2000):
            received.append(parse_command(commands.recv()))
            if announces or len(received) == len(METAS):
                break
        if announces:
            assert received == [ImageBatchCommand(tuple(METAS), 5, 3)]
        else:
            assert received == [ImageCommand(METAS[k], 5, 3 + k) for k in range(3)]
    finally:
        link.close()
        answers.close(linger=0)
        commands.close(linger=0)
        shutil.rmtree(ipc_dir, ignore_errors=True)
