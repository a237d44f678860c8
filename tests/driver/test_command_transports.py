"""The driver's WriterLink and the writer's DriverLink over every pairing of the command
channel's transports (own ZMTP or libzmq on either side, chosen by STDDAQ_COMMAND_TRANSPORT
as a mixed deployment would): every command arrives byte-equal and in order, the answers
come back, and a writer that is not there is WriterUnreachable."""

from __future__ import annotations

import struct
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from stddaq_common.bus.command_channel import TRANSPORT_ENV
from stddaq_common.bus.driver_writer import (
    ConfirmCommand,
    EventKind,
    encode_command,
    encode_event,
    encode_image,
    encode_image_batch,
)
from stddaq_driver.writer_link import WriterLink, WriterUnreachable

driver_link = pytest.importorskip("stddaq_writer.driver_link")

WAIT_MS = 30_000
"""Only catches hangs: every wait below ends on a count."""
PROBE = encode_command(ConfirmCommand(probe=True))


@pytest.fixture
def ipc_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="stddaq-cmd-", dir="/tmp") as directory:
        yield directory


def metadata(image_id: int) -> bytes:
    """Stand-in ImageMetadata bytes (the link never decodes them), of varying size."""
    return struct.pack(">Q", image_id) + bytes([image_id % 251]) * (image_id * 13 % 300)


@pytest.mark.parametrize("writer_transport", ["zmtp", "libzmq"])
@pytest.mark.parametrize("driver_transport", ["zmtp", "libzmq"])
def test_commands_and_answers_cross_every_pairing_of_transports(
    ipc_dir: str, driver_transport: str, writer_transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = f"cmd{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(TRANSPORT_ENV, driver_transport)
    link = WriterLink(detector, ipc_dir, 1)
    monkeypatch.setenv(TRANSPORT_ENV, writer_transport)
    writer = driver_link.DriverLink(detector, ipc_dir, 0)
    try:
        assert (link.command_transport(0), writer.command_transport) == (
            driver_transport,
            writer_transport,
        )
        assert writer.answer_transport == writer_transport
        got = None
        for _ in range(WAIT_MS // 10):  # the writer connects within its receive calls
            link.probe(acquisition_running=False)
            got = writer.receive(10)
            if got is not None:
                break
        assert got == [PROBE]
        while writer.receive(0) is not None:  # probes still in flight
            pass
        expected: list[list[bytes]] = []
        position = 0
        for image_id in range(1, 5001):
            link.send_image(0, 7, position, metadata(image_id))
            expected.append([encode_image(metadata(image_id), 7, position)])
            position += 1
        assert writer.send(encode_event(0, EventKind.HEARTBEAT, batches=True), wait=True)
        assert link.wait_for_event(WAIT_MS)
        events = []
        while not events:
            events = link.receive_events()
        assert [e.event for e in events] == [EventKind.HEARTBEAT]
        raws = [metadata(k) for k in range(9000, 9064)]
        link.send_images(0, 7, position, raws)  # the writer announced batches: one message
        expected.append([encode_image_batch(raws, 7, position)])
        got_all = [writer.receive(WAIT_MS) for _ in expected]
        assert got_all == expected
        assert writer.receive(0) is None
    finally:
        writer.close()
        link.close()


def test_a_command_to_a_writer_that_is_not_there_is_writer_unreachable(
    ipc_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TRANSPORT_ENV, raising=False)
    link = WriterLink(f"cmd{uuid.uuid4().hex[:6]}", ipc_dir, 2)
    try:
        link.probe(acquisition_running=False)  # never waits, never raises
        with pytest.raises(WriterUnreachable, match="writer 1 did not take the confirm"):
            link.send_confirm(1, 3)
        assert link.owed_since(1) is None, "nothing is owed for a command that did not go"
    finally:
        link.close()
