"""Zero-copy sends of buffers that outlive the socket, without pyzmq's per-frame round trip.

pyzmq's zero-copy send (`copy=False`) registers each buffer with its garbage-collector
thread and has libzmq's I/O thread message that thread when the frame is sent, so every
frame costs a Python thread wake-up (with the GIL) besides the send. A buffer that is
never freed nor changed while the process sends (the fake camera's prepared frames) needs
none of that: libzmq's `zmq_msg_init_data` with no free function sends it as a constant
message. This module calls it through ctypes on the libzmq that pyzmq itself loaded.

The caller keeps every pinned buffer alive and unchanged until the socket is closed and
its context terminated (`PinnedBuffer` holds a reference). Where libzmq's C functions
cannot be reached (another pyzmq backend), `PinnedSender.native` is False and sends fall
back to pyzmq's zero-copy path: the same bytes, just dearer.
"""

from __future__ import annotations

import ctypes
import errno as errno_module
import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

ZMQ_MSG_T_BYTES = 64
"""sizeof(zmq_msg_t) in libzmq 4.x."""


@dataclass(frozen=True, slots=True)
class PinnedBuffer:
    """A buffer pinned for constant-message sends: its address and size, and a byte view
    of it (which keeps the buffer alive)."""

    address: int
    nbytes: int
    view: memoryview

    def part(self, offset: int, nbytes: int) -> PinnedBuffer:
        """The `nbytes` bytes from `offset` on, pinned as well."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self.nbytes:
            raise ValueError(f"bytes {offset}..{offset + nbytes} are not within the {self.nbytes} pinned")
        return PinnedBuffer(self.address + offset, nbytes, self.view[offset : offset + nbytes])


def _load_libzmq() -> ctypes.CDLL | None:
    """libzmq's C functions as pyzmq loaded them (its extension module links libzmq), or None."""
    try:
        extension = importlib.import_module("zmq.backend.cython._zmq")
        library = ctypes.CDLL(extension.__file__)
        functions: tuple[tuple[str, list[type[ctypes._SimpleCData[Any]]]], ...] = (
            ("zmq_msg_init_data", [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                   ctypes.c_void_p, ctypes.c_void_p]),
            ("zmq_msg_send", [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]),
            ("zmq_msg_close", [ctypes.c_void_p]),
            ("zmq_errno", []),
        )
        for name, argtypes in functions:
            function = getattr(library, name)
            function.argtypes = argtypes
            function.restype = ctypes.c_int
    except (ImportError, OSError, AttributeError):
        return None
    return library


_libzmq = _load_libzmq()


def pin(buffer: object) -> PinnedBuffer:
    """Pin a C-contiguous buffer (bytes, numpy array, memoryview): its address and size.

    The returned object keeps `buffer` alive; the bytes must not change while sends of it
    may be queued.
    """
    view = memoryview(buffer)  # type: ignore[arg-type]
    if not view.c_contiguous:
        raise ValueError("only a contiguous buffer can be pinned")
    array = np.frombuffer(view, np.uint8)
    return PinnedBuffer(int(array.ctypes.data), view.nbytes, array.data)


class PinnedSender:
    """Sends pinned buffers on one pyzmq socket as libzmq constant messages (no copy, no
    free callback). Use from the socket's thread only, as the socket itself."""

    def __init__(self, socket: zmq.Socket[bytes]) -> None:
        self._socket = socket
        self._handle = socket.underlying
        self._message = ctypes.create_string_buffer(ZMQ_MSG_T_BYTES)
        self.native = _libzmq is not None
        """True if sends go straight to libzmq; False: pyzmq zero-copy fallback."""

    def send(self, buffer: PinnedBuffer, flags: int = 0) -> None:
        """Send `buffer` as one message part; raises zmq.Again (NOBLOCK, queue full) or
        ZMQError as `socket.send` does. Never call it once the socket is closed."""
        library = _libzmq
        if library is None:
            self._socket.send(buffer.view, flags, copy=False)
            return
        message = self._message
        if library.zmq_msg_init_data(message, buffer.address, buffer.nbytes, None, None) != 0:
            raise zmq.ZMQError(library.zmq_errno())
        while library.zmq_msg_send(message, self._handle, flags) < 0:
            errno = library.zmq_errno()
            if errno == errno_module.EINTR:
                continue
            library.zmq_msg_close(message)
            if errno == zmq.EAGAIN:
                raise zmq.Again(errno)
            raise zmq.ZMQError(errno)
