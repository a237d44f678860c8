"""Metadata streams: the ZeroMQ PUB/SUB sockets that carry ImageMetadata between services.

A buffer's single writer binds a `MetadataPublisher` at `ipc://<ipc_dir>/<detector>-<suffix>`
and publishes one message per image after writing its slot; every reader connects a
`MetadataSubscriber`. This module only moves bytes over sockets; `stddaq_common.bus.metadata`
turns them into objects.

- Nothing blocks forever: `publish` never blocks (a message that does not fit is counted in
  `dropped`), and `receive` gives up after a timeout (1 s by default) and returns None.
- A subscriber never raises on a bad message: it logs (rate-limited), counts it in
  `bad_messages` and waits for the next one.
- A subscriber on an ipc:// address reads ZeroMQ's wire protocol itself by default (no
  libzmq I/O thread: one wake-up per batch of messages); libzmq's SUB is the fallback
  (`STDDAQ_METADATA_TRANSPORT=libzmq`, other transports, publishers older than ZMTP 3.0).
- A publisher on an ipc:// path speaks the PUB side itself as well (bus/zmtp_publisher.py:
  one send per subscriber from the caller's thread); tcp:// and abstract addresses use libzmq.
- The publisher owns its ipc socket file: it refuses to take over the address of a live
  publisher, replaces a stale file left by a crashed one, and removes its file on close.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import zmq

from stddaq_common.bus.metadata import (
    ImageMeta,
    ImageMetaEncoder,
    MetadataError,
    decode_image_metadata,
)
from stddaq_common.bus.transport import LIBZMQ, ZMTP
from stddaq_common.bus.transport import choose_transport as _choose_transport
from stddaq_common.bus.zmtp_publisher import ZmtpPublisher
from stddaq_common.bus.zmtp_subscriber import PeerNotSpoken, ZmtpSubscriber
from stddaq_common.names import IMAGE_SUFFIX, ipc_address
from stddaq_common.rate_limited_log import RateLimitedLog
from stddaq_common.wire.zmtp_sub import Message, Multipart

if TYPE_CHECKING:  # the config model (pydantic) is not needed to move messages
    from stddaq_common.config.model import DaqConfig

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 1000
"""How long `MetadataSubscriber.receive` waits for a message by default."""

DEFAULT_HWM = 100_000
"""Default send/receive high-water marks in messages (about 4 MB of metadata each)."""

_MAX_UNIX_PATH_BYTES = 107
"""Longest usable Unix-socket path on Linux (sun_path is 108 bytes with the trailing NUL)."""

_BAD_MESSAGE_LOG_INTERVAL_S = 5.0


TRANSPORT_ENV = "STDDAQ_METADATA_TRANSPORT"
"""Environment variable that chooses the subscribers' transport: zmtp (the own reader,
bus/zmtp_subscriber.py, the default for ipc://) or libzmq (zmq.SUB)."""


def choose_transport(address: str, requested: str | None = None) -> str:
    """The subscriber transport for `address`: `requested`, else $STDDAQ_METADATA_TRANSPORT,
    else ZMTP; LIBZMQ for addresses other than ipc:// (the own reader speaks Unix sockets)."""
    return _choose_transport(address, requested, TRANSPORT_ENV)


class StreamError(Exception):
    """A metadata socket that cannot be set up (address taken, path too long, no directory)."""


def ipc_file_of(address: str) -> str | None:
    """The filesystem path behind an `ipc://` address; None for other transports and for
    abstract-namespace addresses (`ipc://@name`), which have no file."""
    if not address.startswith("ipc://"):
        return None
    path = address[len("ipc://") :]
    if path.startswith("@"):
        return None
    return path


def _socket_is_live(path: str) -> bool:
    """True if a process is listening on the Unix socket at `path` (connect succeeds)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return False
    except FileNotFoundError:
        return False
    finally:
        probe.close()
    return True


def _clear_stale_socket(path: str, address: str) -> None:
    """Make `path` free for binding: remove a dead socket file, refuse anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise StreamError(f"cannot bind {address}: {path} exists and is not a socket; remove it")
    if _socket_is_live(path):
        raise StreamError(
            f"cannot bind {address}: another live publisher is bound there "
            "(is a second instance of this service running?)"
        )
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as error:
        raise StreamError(
            f"cannot bind {address}: cannot remove the stale socket file {path}: {error.strerror}"
        ) from None
    log.warning("removed stale socket file %s left by a publisher that is gone", path)


def _check_hwm(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1 (0 would mean an unbounded queue), got {value}")


def _check_ipc_path(path: str, address: str) -> None:
    length = len(os.fsencode(path))
    if length > _MAX_UNIX_PATH_BYTES:
        raise StreamError(
            f"cannot bind {address}: the socket path is {length} bytes, Unix sockets allow at "
            f"most {_MAX_UNIX_PATH_BYTES}; use a shorter ipc_dir"
        )
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise StreamError(f"cannot bind {address}: directory {directory} does not exist")


class MetadataPublisher:
    """Binds a PUB socket and publishes ImageMetadata without ever blocking the caller.

    By default it is a plain PUB: a subscriber whose queue is full misses messages while the
    others still get them, so one stuck user service can never cost the writers an image.
    Subscribers see such a loss as a gap in the (strictly increasing) image ids and count it.
    With `count_drops=True` the socket uses ZMQ_XPUB_NODROP instead: when any subscriber's
    queue (`sndhwm` here plus its own `rcvhwm`) is full, the message goes to no subscriber,
    `publish` returns False and `dropped` counts it (for benchmarks and lock-step consumers).

    On an ipc:// path (every stddaq buffer's address) the PUB is `ZmtpPublisher`: the same
    ZMTP on the wire, each message sent from the caller's thread without libzmq's I/O thread
    (about 60 us of CPU less per message); other addresses (tcp://, abstract ipc://@name)
    use a libzmq PUB socket.
    """

    def __init__(self, address: str, *, sndhwm: int = DEFAULT_HWM, count_drops: bool = False) -> None:
        _check_hwm("sndhwm", sndhwm)
        self.address = address
        self.published = 0
        """Messages accepted for sending."""
        self.dropped = 0
        """Messages not sent because a subscriber's queue was full (publish returned False)."""
        self._encoder = ImageMetaEncoder()
        self._path = ipc_file_of(address)
        self._bound_inode: tuple[int, int] | None = None
        if self._path is not None:
            _check_ipc_path(self._path, address)
            _clear_stale_socket(self._path, address)
        self._closed = False
        self._zmtp: ZmtpPublisher | None = None
        self._socket: zmq.Socket[bytes] | None = None
        if self._path is not None:
            try:
                self._zmtp = ZmtpPublisher(self._path, sndhwm=sndhwm, count_drops=count_drops)
            except OSError as error:
                raise StreamError(f"cannot bind {address}: {error.strerror or error}") from None
        else:
            pub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
            try:
                pub.setsockopt(zmq.LINGER, 0)
                pub.setsockopt(zmq.SNDHWM, sndhwm)
                if count_drops:
                    pub.setsockopt(zmq.XPUB_NODROP, 1)
                pub.bind(address)
            except zmq.ZMQError as error:
                pub.close(linger=0)
                raise StreamError(f"cannot bind {address}: {error.strerror}") from None
            self._socket = pub
        if self._path is not None:
            info = os.stat(self._path)
            self._bound_inode = (info.st_dev, info.st_ino)

    @classmethod
    def for_config(
        cls,
        config: DaqConfig,
        suffix: str = IMAGE_SUFFIX,
        *,
        sndhwm: int = DEFAULT_HWM,
        count_drops: bool = False,
    ) -> MetadataPublisher:
        """The publisher of buffer `<detector>-<suffix>` at `ipc://<ipc_dir>/<detector>-<suffix>`."""
        address = ipc_address(config.detector_name, suffix, config.ipc_dir)
        return cls(address, sndhwm=sndhwm, count_drops=count_drops)

    def publish(self, meta: ImageMeta) -> bool:
        """Encode and send one ImageMetadata; False (and `dropped` + 1) if it did not fit."""
        return self.publish_bytes(self._encoder.encode(meta))

    def publish_bytes(self, payload: bytes) -> bool:
        """Send already-encoded metadata bytes; False (and `dropped` + 1) if they did not fit."""
        own = self._zmtp
        if own is not None:
            if not own.send(payload):
                self.dropped += 1
                return False
        else:
            assert self._socket is not None
            try:
                self._socket.send(payload, zmq.NOBLOCK)
            except zmq.Again:
                self.dropped += 1
                return False
        self.published += 1
        return True

    def publish_all(self, metas: Sequence[ImageMeta]) -> bool:
        """Encode and send several ImageMetadata in order, with one system call per
        subscriber: True when all went as `publish` would have sent each; False with
        nothing sent where each message needs its own answer (libzmq, count_drops): then
        call `publish` for each."""
        own = self._zmtp
        if own is None:
            return False
        encode = self._encoder.encode
        if not own.send_all([encode(meta) for meta in metas]):
            return False
        self.published += len(metas)
        return True

    def close(self) -> None:
        """Remove the socket file, then close the socket (LINGER 0: messages still queued for
        slow subscribers are discarded). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._remove_socket_file()
        if self._zmtp is not None:
            self._zmtp.close()
        if self._socket is not None:
            self._socket.close(linger=0)

    def _remove_socket_file(self) -> None:
        # Only our own file: a publisher bound after us at the same path keeps its file.
        if self._path is None or self._bound_inode is None:
            return
        try:
            info = os.stat(self._path)
            if (info.st_dev, info.st_ino) == self._bound_inode:
                os.unlink(self._path)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("could not remove socket file %s: %s", self._path, error.strerror)
        self._bound_inode = None

    def __enter__(self) -> MetadataPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class MetadataSubscriber:
    """Connects a SUB socket (subscribed to everything) and receives ImageMetadata.

    `receive` returns None when nothing arrived within the timeout. Messages that are not
    one ImageMetadata (undecodable, or multipart) are logged, counted in `bad_messages`
    and skipped.

    Two transports behave the same (tests/common/test_streams.py runs every test with
    both): ZMTP, the own reader of ZeroMQ's wire protocol (bus/zmtp_subscriber.py), the
    default for ipc:// addresses: it reads in the caller's thread, so a batch of queued
    messages costs one wake-up and one recv, where libzmq's SUB wakes its I/O thread and
    the caller for each message; and LIBZMQ, zmq.SUB, for other addresses, when
    `transport`/$STDDAQ_METADATA_TRANSPORT says so, and automatically when the publisher
    speaks a ZMTP older than 3.0. With ZMTP, `rcvhwm` is not a message count: a subscriber
    that does not read fills the kernel's socket buffer, then the publisher's SNDHWM, then
    the publisher drops messages for it, as a PUB does at a full libzmq SUB queue.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        rcvhwm: int = DEFAULT_HWM,
        transport: str | None = None,
    ) -> None:
        if timeout_ms < 0:
            raise ValueError(f"timeout_ms must be >= 0 (no waiting forever), got {timeout_ms}")
        _check_hwm("rcvhwm", rcvhwm)
        self.address = address
        self.timeout_ms = timeout_ms
        self.received = 0
        """Good messages returned by receive / receive_raw."""
        self.bad_messages = 0
        """Messages skipped because they were not one ImageMetadata."""
        self._bad_log = RateLimitedLog(log, _BAD_MESSAGE_LOG_INTERVAL_S)
        self._rcvhwm = rcvhwm
        self.transport = choose_transport(address, transport)
        """ZMTP (own reader, the default for ipc://) or LIBZMQ (zmq.SUB)."""
        self._zmtp: ZmtpSubscriber | None = None
        self._socket: zmq.Socket[bytes] | None = None
        if self.transport == ZMTP:
            try:
                self._zmtp = ZmtpSubscriber(address)
            except PeerNotSpoken as error:
                self._fall_back(str(error))
        else:
            self._open_libzmq()

    def _open_libzmq(self) -> None:
        address = self.address
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
            sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(address)
        except zmq.ZMQError as error:
            sock.close(linger=0)
            raise StreamError(f"cannot connect {address}: {error.strerror}") from None
        self._socket = sock
        self._rcvtimeo = self.timeout_ms

    def _fall_back(self, reason: str) -> None:
        """The publisher speaks a ZMTP this reader does not: use libzmq from now on."""
        log.warning(
            "metadata from %s: %s; receiving through libzmq instead", self.address, reason
        )
        if self._zmtp is not None:
            self._zmtp.close()
            self._zmtp = None
        self.transport = LIBZMQ
        self._open_libzmq()

    @classmethod
    def for_config(
        cls,
        config: DaqConfig,
        suffix: str = IMAGE_SUFFIX,
        *,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        rcvhwm: int = DEFAULT_HWM,
        transport: str | None = None,
    ) -> MetadataSubscriber:
        """The subscriber of buffer `<detector>-<suffix>` at `ipc://<ipc_dir>/<detector>-<suffix>`."""
        address = ipc_address(config.detector_name, suffix, config.ipc_dir)
        return cls(address, timeout_ms=timeout_ms, rcvhwm=rcvhwm, transport=transport)

    def receive(self, timeout_ms: int | None = None) -> ImageMeta | None:
        """The next ImageMetadata, or None if none arrived within `timeout_ms` (default: the
        subscriber's timeout). Bad messages are skipped and do not extend the wait."""
        deadline: float | None = None
        wait_ms = self.timeout_ms if timeout_ms is None else timeout_ms
        while True:
            payload = self._next_single_part(wait_ms)
            if payload is None:
                return None
            try:
                meta = decode_image_metadata(payload)
            except MetadataError as error:
                self._count_bad(str(error), payload)
                deadline, wait_ms = self._remaining(deadline, wait_ms)
                continue
            self.received += 1
            return meta

    def receive_raw(self, timeout_ms: int | None = None) -> bytes | None:
        """The next single-part message as bytes, undecoded (for services that only forward),
        or None on timeout. Multipart messages are counted as bad and skipped."""
        payload = self._next_single_part(self.timeout_ms if timeout_ms is None else timeout_ms)
        if payload is not None:
            self.received += 1
        return payload

    def receive_raw_batch(self, limit: int, timeout_ms: int | None = None) -> list[bytes]:
        """Like receive_raw, then also every message already queued (up to `limit` in all)
        without waiting for more: one wake-up takes what came meanwhile. Empty on timeout."""
        wait_ms = self.timeout_ms if timeout_ms is None else timeout_ms
        if self._zmtp is not None:
            return self._zmtp_batch(limit, wait_ms)
        first = self._next_single_part(wait_ms)
        if first is None:
            return []
        batch = [first]
        sock = self._socket
        assert sock is not None
        while len(batch) < limit:
            try:
                frame = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            payload = frame.bytes
            if frame.more:
                parts = 1 + self._drain_parts()
                self._count_bad(f"a multipart message ({parts} parts), not one ImageMetadata", payload)
                continue
            batch.append(payload)
        self.received += len(batch)
        return batch

    def _zmtp_batch(self, limit: int, wait_ms: int) -> list[bytes]:
        """receive_raw_batch with the own reader: what one read brought (at most `limit`),
        waiting for it at most `wait_ms`; multipart messages are counted and skipped."""
        deadline: float | None = None
        while True:
            items = self._zmtp_take(wait_ms, limit)
            if not items:
                if self._zmtp is None:  # fell back to libzmq
                    return self.receive_raw_batch(limit, wait_ms)
                return []
            batch: list[bytes] = []
            for item in items:
                if type(item) is bytes:
                    batch.append(item)
                else:
                    self._count_multipart(item)  # type: ignore[arg-type]
            if batch:
                self.received += len(batch)
                return batch
            deadline, wait_ms = self._remaining(deadline, wait_ms)

    def _zmtp_take(self, wait_ms: int, limit: int) -> list[Message]:
        """Messages from the own ZMTP reader (falls back to libzmq for a peer it does not speak)."""
        reader = self._zmtp
        assert reader is not None
        try:
            return reader.receive(wait_ms, limit)
        except PeerNotSpoken as error:
            self._fall_back(str(error))
            return []

    def _count_multipart(self, message: Multipart) -> None:
        self._count_bad(
            f"a multipart message ({message.parts} parts), not one ImageMetadata", message.first
        )

    def _next_single_part(self, wait_ms: int) -> bytes | None:
        """Receive the next message that has exactly one part; None on timeout."""
        deadline: float | None = None
        if self._zmtp is not None:
            while True:
                items = self._zmtp_take(wait_ms, 1)
                if not items:
                    if self._zmtp is None:  # fell back to libzmq
                        return self._next_single_part(wait_ms)
                    return None
                item = items[0]
                if type(item) is bytes:
                    return item
                self._count_multipart(item)  # type: ignore[arg-type]
                deadline, wait_ms = self._remaining(deadline, wait_ms)
        sock = self._socket
        assert sock is not None
        while True:
            if wait_ms != self._rcvtimeo:
                sock.setsockopt(zmq.RCVTIMEO, max(wait_ms, 0))
                self._rcvtimeo = wait_ms
            try:
                # A Frame tells whether more parts follow at a fraction of the cost of
                # getsockopt(RCVMORE), which is the dearest call of the receive path.
                frame = sock.recv(copy=False)
            except zmq.Again:
                return None
            payload = frame.bytes
            if not frame.more:
                return payload
            parts = 1 + self._drain_parts()
            self._count_bad(f"a multipart message ({parts} parts), not one ImageMetadata", payload)
            deadline, wait_ms = self._remaining(deadline, wait_ms)

    def _drain_parts(self) -> int:
        """Discard the remaining parts of a multipart message (they arrive together)."""
        sock = self._socket
        assert sock is not None
        count = 0
        while True:
            sock.recv(zmq.NOBLOCK)
            count += 1
            if not sock.getsockopt(zmq.RCVMORE):
                return count

    @staticmethod
    def _remaining(deadline: float | None, wait_ms: int) -> tuple[float, int]:
        """After a skipped message: the overall deadline and the milliseconds left before it."""
        now = time.monotonic()
        if deadline is None:
            deadline = now + wait_ms / 1000.0
        return deadline, max(0, int((deadline - now) * 1000.0))

    def _count_bad(self, reason: str, payload: bytes) -> None:
        self.bad_messages += 1
        self._bad_log.warning(
            "bad message",
            "skipped a bad metadata message from %s: %s; %d bytes, starting %s",
            self.address, reason, len(payload), payload[:16].hex(),
        )

    @property
    def poll_handle(self) -> zmq.Socket[bytes] | int:
        """What to wait on in a zmq.Poller together with other sockets: the SUB socket, or
        the own reader's fd. It may change (a fall back to libzmq): ask before each wait.
        A ZMTP reader may hold messages already read (`has_queued`), which no poll shows."""
        if self._zmtp is not None:
            return self._zmtp.fileno()
        assert self._socket is not None
        return self._socket

    @property
    def connects(self) -> int:
        """Connections the own ZMTP reader made (the first and each reconnection); 0 for libzmq."""
        return 0 if self._zmtp is None else self._zmtp.connects

    @property
    def protocol_errors(self) -> int:
        """Connections the own ZMTP reader dropped because the publisher broke ZMTP."""
        return 0 if self._zmtp is None else self._zmtp.protocol_errors

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Block until about `count` messages wait to be received, or `timeout_s` passed,
        waking no one before (ZmtpReader.wait_for); False at once with libzmq, whose queue
        cannot be counted (the caller then sleeps as long as is safe without a count)."""
        if self._zmtp is None:
            return False
        self._zmtp.wait_for(count, timeout_s)
        return True

    def has_queued(self) -> bool:
        """Messages were read already and wait to be taken (a poll would not show them)."""
        return self._zmtp is not None and self._zmtp.has_queued()

    @property
    def connected(self) -> bool:
        """False while the own ZMTP reader has no connection (libzmq: always True, it
        connects in its own thread)."""
        return self._zmtp is None or self._zmtp.connected

    def close(self) -> None:
        """Close the socket (LINGER 0). Safe to call twice."""
        if self._zmtp is not None:
            self._zmtp.close()
        if self._socket is not None and not self._socket.closed:
            self._socket.close(linger=0)

    def __enter__(self) -> MetadataSubscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "DEFAULT_HWM",
    "DEFAULT_TIMEOUT_MS",
    "LIBZMQ",
    "TRANSPORT_ENV",
    "ZMTP",
    "MetadataPublisher",
    "MetadataSubscriber",
    "StreamError",
    "choose_transport",
    "ipc_file_of",
]
