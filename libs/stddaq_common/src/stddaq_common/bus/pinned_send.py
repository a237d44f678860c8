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

A sender that must know when libzmq is done with a buffer (the live stream checks the
ring slot it sent from) sends it *tracked*: libzmq then calls C library's `putw` as the
message's free function, with an unbuffered, non-blocking pipe as its stream, so the I/O
thread writes the low 32 bits of the buffer's address into the pipe when it lets go of
the buffer; `ReleaseNotices.drain()` reads them, no thread and no GIL involved. The
caller keys its buffers by `release_key(address)` and keeps at most one buffer per key
queued at a time (and far fewer than the pipe's 16,384 notices unread).

`PinnedSender.send_after_header` sends a copied header part and a tracked buffer as one
two-part message in three C calls and no Python object per message: the live stream's
path for an image sent from its ring slot.
"""

from __future__ import annotations

import ctypes
import errno as errno_module
import importlib
import os
import struct
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
    tracked: bool = False
    """Sent tracked: `ReleaseNotices` reports when libzmq lets go of it."""

    def part(self, offset: int, nbytes: int) -> PinnedBuffer:
        """The `nbytes` bytes from `offset` on, pinned as well."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self.nbytes:
            raise ValueError(f"bytes {offset}..{offset + nbytes} are not within the {self.nbytes} pinned")
        return PinnedBuffer(self.address + offset, nbytes, self.view[offset : offset + nbytes], self.tracked)


def _load_libzmq() -> ctypes.CDLL | None:
    """libzmq's C functions as pyzmq loaded them (its extension module links libzmq), or None."""
    try:
        extension = importlib.import_module("zmq.backend.cython._zmq")
        library = ctypes.CDLL(extension.__file__)
        functions: tuple[tuple[str, list[type[ctypes._SimpleCData[Any]]]], ...] = (
            ("zmq_msg_init_data", [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                   ctypes.c_void_p, ctypes.c_void_p]),
            ("zmq_msg_send", [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]),
            ("zmq_send", [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]),
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

_KEY = struct.Struct("=I")
_NOBLOCK_MORE = zmq.NOBLOCK | zmq.SNDMORE
_IONBF = 2
"""glibc's setvbuf mode for an unbuffered stream."""


def release_key(address: int) -> int:
    """What `ReleaseNotices` reports for a buffer at `address`: its low 32 bits."""
    return address & 0xFFFFFFFF


class ReleaseNotices:
    """The pipe libzmq's I/O thread writes released buffers' keys into (see the module doc)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fdopen.restype = ctypes.c_void_p
        libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
        libc.setvbuf.restype = ctypes.c_int
        libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        self._read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        stream = libc.fdopen(write_fd, b"wb")
        if not stream or libc.setvbuf(stream, None, _IONBF, 0) != 0:
            os.close(self._read_fd)
            raise OSError(ctypes.get_errno(), "cannot open an unbuffered stream on the notice pipe")
        self.stream: int = stream
        """The FILE* libzmq's free function writes to (never closed: the I/O thread may
        write to it until the process ends)."""
        self.free_function: int = ctypes.cast(libc.putw, ctypes.c_void_p).value or 0

    def drain(self) -> list[int]:
        """The keys of the buffers released since the last call (never blocks)."""
        keys: list[int] = []
        while True:
            try:
                data = os.read(self._read_fd, 65536)
            except BlockingIOError:
                return keys
            keys.extend(key for (key,) in _KEY.iter_unpack(data))
            if len(data) < 65536:
                return keys


_notices: ReleaseNotices | None = None


def release_notices() -> ReleaseNotices | None:
    """The process's release notices (made on first use); None where tracked native sends
    are not available (then send tracked buffers with pyzmq's trackers)."""
    global _notices
    if _notices is None and _libzmq is not None:
        try:
            _notices = ReleaseNotices()
        except (OSError, AttributeError):
            return None
    return _notices


def buffer_address(buffer: object) -> int:
    """The address of a C-contiguous buffer's first byte (read-only buffers too)."""
    return int(np.frombuffer(buffer, np.uint8).ctypes.data)  # type: ignore[call-overload]


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
        self._tracking: tuple[int, int] | None = None
        """(free function, hint) of tracked sends, once the release notices exist."""

    def _tracked_free(self) -> tuple[int, int]:
        tracking = self._tracking
        if tracking is None:
            notices = release_notices()
            if notices is None:
                raise ValueError("tracked native sends are not available (check release_notices())")
            tracking = self._tracking = (notices.free_function, notices.stream)
        return tracking

    def send_after_header(self, header: bytes, address: int, nbytes: int) -> bool:
        """Send `header` (copied) and the `nbytes` at `address` (tracked, as `send` of a
        tracked PinnedBuffer) as one two-part message, without blocking. False if the
        socket refused the message (EAGAIN at the header: nothing was sent and no release
        is reported); ZMQError for anything else. Only where `native` is True."""
        library = _libzmq
        if library is None:
            raise ValueError("send_after_header needs libzmq's C functions (check `native`)")
        free_function, hint = self._tracking or self._tracked_free()
        handle = self._handle
        while library.zmq_send(handle, header, len(header), _NOBLOCK_MORE) < 0:
            errno = library.zmq_errno()
            if errno == errno_module.EINTR:
                continue
            if errno == zmq.EAGAIN:
                return False
            raise zmq.ZMQError(errno)
        message = self._message
        if library.zmq_msg_init_data(message, address, nbytes, free_function, hint) != 0:
            raise zmq.ZMQError(library.zmq_errno())
        # Once a message's first part is accepted, ZeroMQ accepts the rest of it.
        while library.zmq_msg_send(message, handle, zmq.NOBLOCK) < 0:
            errno = library.zmq_errno()
            if errno != errno_module.EINTR:
                library.zmq_msg_close(message)
                raise zmq.ZMQError(errno)
        return True

    def send(self, buffer: PinnedBuffer, flags: int = 0) -> None:
        """Send `buffer` as one message part; raises zmq.Again (NOBLOCK, queue full) or
        ZMQError as `socket.send` does. Never call it once the socket is closed. A tracked
        buffer's key is reported once whether it was sent or refused."""
        library = _libzmq
        if library is None:
            self._socket.send(buffer.view, flags, copy=False)
            return
        message = self._message
        free_function: int | None = None
        hint: int | None = None
        if buffer.tracked:
            notices = release_notices()
            if notices is None:
                raise ValueError("tracked native sends are not available (check release_notices())")
            free_function, hint = notices.free_function, notices.stream
        if library.zmq_msg_init_data(message, buffer.address, buffer.nbytes, free_function, hint) != 0:
            raise zmq.ZMQError(library.zmq_errno())
        while library.zmq_msg_send(message, self._handle, flags) < 0:
            errno = library.zmq_errno()
            if errno == errno_module.EINTR:
                continue
            library.zmq_msg_close(message)
            if errno == zmq.EAGAIN:
                raise zmq.Again(errno)
            raise zmq.ZMQError(errno)
