"""The driver's ZeroMQ sockets to its writers (docs/driver-writer-protocol.md).

Per writer k, as std_daq has it: a PUSH bound at `<D>-driver-<k>` (commands) and a PULL
connected to the writer's PUSH at `<D>-writer-<k>` (answers). Names, messages and bytes
come from stddaq_common.bus.driver_writer. The command PUSH is by default stddaq's own
ZMTP PUSH (stddaq_common.bus.command_channel: each command one `send` from this thread, no
libzmq I/O thread; libzmq's with STDDAQ_COMMAND_TRANSPORT=libzmq); the answer PULL is
libzmq's. Nothing blocks forever: a command that cannot leave within its timeout raises
WriterUnreachable naming the writer.

A std_daq writer answers each command with code and reason only. The link keeps, per
writer, the answers still owed (writers answer in order) and turns such a plain answer
into the event it stands for; a stddaq writer's answers carry their event themselves.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import zmq

from stddaq_common.bus.command_channel import CommandPush, bind_command_push
from stddaq_common.bus.driver_writer import (
    CloseCommand,
    ConfirmCommand,
    CreateCommand,
    EventKind,
    MasterCommand,
    ProtocolError,
    WriterEvent,
    driver_address,
    encode_command,
    encode_image,
    encode_image_batch,
    parse_response,
    writer_address,
)
from stddaq_common.bus.ipc_socket import AddressInUse, OwnSocketFile, claim

log = logging.getLogger(__name__)

IMAGE_QUEUE_LENGTH = 100_000
"""Image messages queued per writer before a send waits (about 10 MB of metadata)."""

CONTROL_SEND_TIMEOUT_S = 2.0
IMAGE_SEND_TIMEOUT_S = 2.0
_BAD_EVENT_LOG_INTERVAL_S = 5.0

WriterStyle = Literal["unknown", "stddaq", "std_daq"]
"""What a writer showed itself to be: its answers carry stddaq's additions or not."""


class WriterUnreachable(Exception):
    """A message to writer `index` could not be sent within its timeout."""

    def __init__(self, index: int, what: str, timeout_s: float) -> None:
        self.index = index
        super().__init__(
            f"writer {index} did not take the {what} message within {timeout_s:g} s "
            "(not running, or stuck)"
        )


@dataclass(slots=True)
class _Owed:
    """An answer a writer owes: what it stands for, for which acquisition, since when."""

    kind: EventKind
    acq_id: int | None
    since: float
    what: str


@dataclass(slots=True)
class _Writer:
    push: CommandPush
    pull: zmq.Socket[bytes]
    own_file: OwnSocketFile
    style: WriterStyle = "unknown"
    owed: deque[_Owed] = field(default_factory=deque)
    batches: bool = False
    """It announced that it takes RecordImages (a stddaq writer that says so)."""


class WriterLink:
    """The sockets to `n_writers` writers; used by one thread only."""

    def __init__(self, detector: str, ipc_dir: str, n_writers: int) -> None:
        self.n_writers = n_writers
        self.bad_events = 0
        """Writer messages that did not follow the protocol (logged and skipped)."""
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._writers: list[_Writer] = []
        self._next_bad_log = 0.0
        self._poller = zmq.Poller()
        try:
            for index in range(n_writers):
                self._writers.append(self._open(detector, ipc_dir, index))
        except (zmq.ZMQError, OSError) as error:
            self.close()
            if isinstance(error, AddressInUse):
                raise
            raise OSError(f"cannot bind the writer sockets in {ipc_dir}: {error.strerror}") from None

    def _open(self, detector: str, ipc_dir: str, index: int) -> _Writer:
        address = driver_address(detector, index, ipc_dir)
        claim(address)
        push = bind_command_push(self._context, address, IMAGE_QUEUE_LENGTH, name=f"writer {index} commands")
        try:
            pull = self._context.socket(zmq.PULL)
            pull.setsockopt(zmq.LINGER, 0)
            pull.setsockopt(zmq.RCVHWM, 100_000)
            pull.connect(writer_address(detector, index, ipc_dir))
        except zmq.ZMQError:
            push.close()
            OwnSocketFile(address).remove()
            raise
        self._poller.register(pull, zmq.POLLIN)
        return _Writer(push, pull, OwnSocketFile(address))

    def style(self, index: int) -> WriterStyle:
        """What writer `index` showed itself to be so far."""
        return self._writers[index].style

    def command_transport(self, index: int) -> str:
        """How commands go to writer `index`: "zmtp" (own PUSH) or "libzmq"."""
        return self._writers[index].push.transport

    def owed_since(self, index: int) -> tuple[float, str] | None:
        """(when, what) of the oldest answer writer `index` still owes; None: none."""
        owed = self._writers[index].owed
        return (owed[0].since, owed[0].what) if owed else None

    # --- sending ---

    def _send(self, index: int, payload: bytes, what: str, timeout_s: float) -> None:
        if not self._writers[index].push.send(payload, timeout_s):
            raise WriterUnreachable(index, what, timeout_s)

    def _owe(self, index: int, kind: EventKind, acq_id: int | None, what: str) -> None:
        self._writers[index].owed.append(_Owed(kind, acq_id, time.monotonic(), what))

    def send_create(self, index: int, command: CreateCommand) -> None:
        """CreateFileCommand to writer `index`; it answers once."""
        self._send(index, encode_command(command), "create", CONTROL_SEND_TIMEOUT_S)
        self._owe(index, EventKind.FILE_CREATED, command.acq_id, "create")

    def send_image(self, index: int, acq_id: int, position: int, raw_metadata: bytes) -> None:
        """RecordImage to writer `index` (the metadata bytes unchanged); no answer."""
        payload = encode_image(raw_metadata, acq_id, position)
        if not self._writers[index].push.send(payload, IMAGE_SEND_TIMEOUT_S):
            raise WriterUnreachable(index, "image", IMAGE_SEND_TIMEOUT_S)

    def send_images(self, index: int, acq_id: int, first_position: int, raws: list[bytes]) -> None:
        """Images dealt in a row to writer `index` at `first_position`, `first_position` + 1,
        ...: one RecordImages to a writer that takes them, else one RecordImage each."""
        writer = self._writers[index]
        if writer.batches and len(raws) > 1:
            payload = encode_image_batch(raws, acq_id, first_position)
            if not writer.push.send(payload, IMAGE_SEND_TIMEOUT_S):
                raise WriterUnreachable(index, "image", IMAGE_SEND_TIMEOUT_S)
            return
        for offset, raw in enumerate(raws):
            self.send_image(index, acq_id, first_position + offset, raw)

    def send_confirm(self, index: int, acq_id: int) -> None:
        """ConfirmLastImageWritten to writer `index`; it answers once."""
        self._send(index, encode_command(ConfirmCommand(acq_id)), "confirm", CONTROL_SEND_TIMEOUT_S)
        self._owe(index, EventKind.CONFIRMED, acq_id, "confirm")

    def send_close(self, index: int, command: CloseCommand) -> None:
        """CloseFile to writer `index`; it answers once."""
        self._send(index, encode_command(command), "close", CONTROL_SEND_TIMEOUT_S)
        self._owe(index, EventKind.CLOSED, command.acq_id, "close")

    def send_master(self, index: int, command: MasterCommand) -> None:
        """BuildMasterFile to (stddaq) writer `index`; it answers with the master's event."""
        self._send(index, encode_command(command), "master", CONTROL_SEND_TIMEOUT_S)

    def probe(self, acquisition_running: bool) -> None:
        """A liveness probe to every writer that should get one now: stddaq writers and
        writers not heard from yet always, std_daq writers only while idle and owing
        nothing (a std_daq writer is then seen alive through its answer). Never waits."""
        payload = encode_command(ConfirmCommand(probe=True))
        for index, writer in enumerate(self._writers):
            if writer.style == "std_daq" and (acquisition_running or writer.owed):
                continue
            if not writer.push.send(payload, 0.0):
                continue  # not connected (not running) or its queue is full: no backlog
            if writer.style == "std_daq":
                self._owe(index, EventKind.HEARTBEAT, None, "probe")

    # --- receiving ---

    @property
    def event_sockets(self) -> list[zmq.Socket[bytes]]:
        """The sockets the writers' answers arrive on (to wait for them with others)."""
        return [writer.pull for writer in self._writers]

    def wait_for_event(self, timeout_ms: int) -> bool:
        """True if an answer can be received within `timeout_ms`."""
        return bool(self._poller.poll(timeout_ms))

    def receive_events(self, limit: int = 1000) -> list[WriterEvent]:
        """The events waiting now (at most `limit` per writer); bad ones are counted,
        logged and skipped."""
        events: list[WriterEvent] = []
        ready = dict(self._poller.poll(0))  # one call for all writers, not a recv each
        if not ready:
            return events
        for index, writer in enumerate(self._writers):
            if writer.pull not in ready:
                continue
            for _ in range(limit):
                try:
                    payload = writer.pull.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                event = self._event_of(index, writer, payload)
                if event is not None:
                    events.append(event)
        return events

    def _event_of(self, index: int, writer: _Writer, payload: bytes) -> WriterEvent | None:
        try:
            response = parse_response(payload)
        except ProtocolError as error:
            self._bad_event(f"writer {index}: {error}", payload)
            return None
        event = response.event
        if event is not None:
            if event.writer != index:
                self._bad_event(
                    f"the answer on writer {index}'s socket says it is writer {event.writer} "
                    "(started with the wrong --index?)",
                    payload,
                )
                return None
            writer.style = "stddaq"
            writer.batches = event.batches
            writer.owed.clear()  # a stddaq writer names what it answers
            return event
        if writer.style != "std_daq":
            log.info("writer %d answers with std_daq's fields only: a std_daq writer", index)
        writer.style = "std_daq"
        writer.batches = False
        if not writer.owed:
            self._bad_event(f"writer {index} answered although it owed no answer", payload)
            return None
        owed = writer.owed.popleft()
        kind = owed.kind if response.ok else EventKind.ERROR
        if owed.kind is EventKind.HEARTBEAT and not response.ok:
            kind = EventKind.HEARTBEAT  # a probe's answer only shows it is alive
        return WriterEvent(
            writer=index,
            event=kind,
            acq_id=owed.acq_id,
            reason=response.reason or None,
            stddaq=False,
        )

    def _bad_event(self, reason: str, payload: bytes) -> None:
        self.bad_events += 1
        now = time.monotonic()
        if now >= self._next_bad_log:
            self._next_bad_log = now + _BAD_EVENT_LOG_INTERVAL_S
            log.warning("skipped a bad writer message: %s (%r)", reason, payload[:200])

    def close(self) -> None:
        """Close every socket and remove the socket files this link created."""
        for writer in self._writers:
            writer.push.close()
            writer.pull.close(linger=0)
            writer.own_file.remove()
        self._writers = []
