"""The writer's ZeroMQ sockets to its driver (docs/driver-writer-protocol.md).

As std_daq's writer has them: PUSH bound at `ipc://<ipc_dir>/<D>-writer-<k>` (answers,
libzmq) and PULL connected to the driver's `ipc://<ipc_dir>/<D>-driver-<k>` (commands),
LINGER 0. The command PULL is by default the own ZMTP reader (bus.command_channel: no
libzmq I/O thread, read in this thread), libzmq's with STDDAQ_COMMAND_TRANSPORT=libzmq.
Names come from stddaq_common.bus.driver_writer; the answer name is never taken from a
live process (AddressInUse) and only the socket file this bind made is removed. Bytes
only: what the messages mean is writer_process's business.
"""

from __future__ import annotations

import zmq

from stddaq_common.bus.command_channel import connect_command_pull
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
        self._answers = self._context.socket(zmq.PUSH)
        self._answers.setsockopt(zmq.LINGER, 0)
        self._answers.setsockopt(zmq.SNDHWM, 100_000)
        try:
            self._answers.bind(answers)
        except zmq.ZMQError as error:
            self._answers.close(0)
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

    def receive(self, timeout_ms: int) -> list[bytes] | None:
        """The next command's parts, waiting up to `timeout_ms`; None if none came
        (bus.command_channel: the own ZMTP PULL or libzmq's)."""
        return self._commands.receive(timeout_ms)

    def send(self, payload: bytes, *, wait: bool) -> bool:
        """Send without blocking; with `wait` (an answer: the driver just sent the command
        and may still be connecting) wait up to ANSWER_WAIT_S. False if it was dropped."""
        try:
            self._answers.send(payload, zmq.NOBLOCK)
            return True
        except zmq.Again:
            pass
        if wait and self._answers.poll(int(ANSWER_WAIT_S * 1000), zmq.POLLOUT):
            try:
                self._answers.send(payload, zmq.NOBLOCK)
                return True
            except zmq.Again:
                pass
        return False

    def close(self) -> None:
        """Close both sockets and remove the answer socket file this link made."""
        self._commands.close()
        self._answers.close(0)
        self._context.term()
        self._own_file.remove()
