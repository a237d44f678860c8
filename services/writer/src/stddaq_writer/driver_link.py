"""The writer's ZeroMQ sockets to its driver (docs/driver-writer-protocol.md).

As std_daq's writer has them: PUSH bound at `ipc://<ipc_dir>/<D>-writer-<k>` (answers)
and PULL connected to the driver's `ipc://<ipc_dir>/<D>-driver-<k>` (commands), LINGER 0.
Both are by default stddaq's own ZMTP sockets (bus.command_channel: the commands read in
this thread, each answer one `send` from it, no libzmq I/O thread); libzmq's with
STDDAQ_COMMAND_TRANSPORT=libzmq (the PULL also for a ZMTP 2 driver).
Names come from stddaq_common.bus.driver_writer; the answer name is never taken from a
live process (AddressInUse) and only the socket file this bind made is removed. Bytes
only: what the messages mean is writer_process's business.
"""

from __future__ import annotations

import zmq

from stddaq_common.bus.command_channel import bind_command_push, connect_command_pull
from stddaq_common.bus.driver_writer import driver_address, writer_address
from stddaq_common.bus.ipc_socket import OwnSocketFile, claim, share_with_folder_group

ANSWER_WAIT_S = 1.0
"""Longest wait for the driver's connection when sending an answer."""


class DriverLink:
    """Writer `index`'s two sockets; used by one thread only."""

    def __init__(self, detector: str, ipc_dir: str, index: int) -> None:
        answers = writer_address(detector, index, ipc_dir)
        claim(answers)  # raises AddressInUse (an OSError) naming what serves it
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            self._answers = bind_command_push(self._context, answers, 100_000, name="answers")
        except (zmq.ZMQError, OSError) as error:
            self._context.term()
            raise OSError(f"cannot bind {answers}: {error.strerror}") from None
        self._own_file = OwnSocketFile(answers)
        share_with_folder_group(answers)
        self._commands = connect_command_pull(
            self._context, driver_address(detector, index, ipc_dir), rcvhwm=1_000_000
        )

    @property
    def command_transport(self) -> str:
        """How commands arrive: "zmtp" (own PULL) or "libzmq" (also after a fallback)."""
        return self._commands.transport

    @property
    def answer_transport(self) -> str:
        """How answers go: "zmtp" (own PUSH) or "libzmq"."""
        return self._answers.transport

    def receive(self, timeout_ms: int) -> list[bytes] | None:
        """The next command's parts, waiting up to `timeout_ms`; None if none came
        (bus.command_channel: the own ZMTP PULL or libzmq's)."""
        return self._commands.receive(timeout_ms)

    def send(self, payload: bytes, *, wait: bool) -> bool:
        """Send without blocking; with `wait` (an answer: the driver just sent the command
        and may still be connecting) wait up to ANSWER_WAIT_S. False if it was dropped."""
        return self._answers.send(payload, ANSWER_WAIT_S if wait else 0.0)

    def close(self) -> None:
        """Close both sockets and remove the answer socket file this link made."""
        self._commands.close()
        self._answers.close()
        self._context.term()
        self._own_file.remove()
