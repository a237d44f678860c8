"""MetadataSubscriber.wait_for: the kernel holds a receive back until a count of messages
came (the socket's low-water mark), so the driver's gathering pause ends on what arrives.

A real publisher (MetadataPublisher, its own ZMTP PUB), the subscriber's own ZMTP reader;
libzmq's SUB cannot count and says so.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from stddaq_common.bus import metadata_stream as streams
from stddaq_common.bus.metadata import ImageMeta
from stddaq_common.bus.metadata_stream import MetadataPublisher, MetadataSubscriber
from stddaq_common.names import ipc_address
from tests.common.stream_peers import PROBE_ID, probe, sequence_meta

HANG_GUARD_S = 20.0
"""Only guards against a hang; a passing run never waits this long."""


@pytest.fixture()
def address() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="stddaq-wf-", dir="/tmp")
    yield ipc_address("det", "image", path)
    shutil.rmtree(path, ignore_errors=True)


def connected(address: str, transport: str = streams.ZMTP) -> tuple[MetadataPublisher, MetadataSubscriber]:
    """A publisher and a subscriber that has received a probe and nothing is left in flight."""
    publisher = MetadataPublisher(address)
    subscriber = MetadataSubscriber(address, transport=transport)
    deadline = time.monotonic() + HANG_GUARD_S
    while subscriber.receive(timeout_ms=10) is None:
        assert time.monotonic() < deadline, "the subscriber never connected"
        publisher.publish(probe())
    while subscriber.receive(timeout_ms=50) is not None:
        pass
    return publisher, subscriber


def received(subscriber: MetadataSubscriber) -> list[ImageMeta]:
    """Every message queued now (none is waited for), probes left out."""
    metas = []
    while (meta := subscriber.receive(timeout_ms=0)) is not None:
        if meta.image_id != PROBE_ID:
            metas.append(meta)
    return metas


def test_the_wait_ends_once_the_count_came_and_they_are_all_there(address: str) -> None:
    publisher, subscriber = connected(address)
    try:
        for index in range(1, 4):  # teaches the reader the messages' size
            publisher.publish(sequence_meta(index))
        assert [m.image_id for m in received_after(subscriber, 3)] == [1, 2, 3]

        def publish_slowly() -> None:
            for index in range(4, 14):
                time.sleep(0.01)
                publisher.publish(sequence_meta(index))

        sender = threading.Thread(target=publish_slowly)
        sender.start()
        started = time.monotonic()
        assert subscriber.wait_for(10, HANG_GUARD_S)
        waited = time.monotonic() - started
        sender.join()
        assert waited < HANG_GUARD_S / 2, "the wait did not end on the count"
        metas = received(subscriber)
        assert [m.image_id for m in metas] == list(range(4, 14))
        assert metas == [sequence_meta(i) for i in range(4, 14)]
    finally:
        subscriber.close()
        publisher.close()


def received_after(subscriber: MetadataSubscriber, count: int) -> list[ImageMeta]:
    """The next `count` messages (hang guard only)."""
    metas: list[ImageMeta] = []
    deadline = time.monotonic() + HANG_GUARD_S
    while len(metas) < count and time.monotonic() < deadline:
        meta = subscriber.receive(timeout_ms=100)
        if meta is not None and meta.image_id != PROBE_ID:
            metas.append(meta)
    return metas


def test_fewer_than_the_count_end_the_wait_at_its_timeout_and_are_kept(address: str) -> None:
    publisher, subscriber = connected(address)
    try:
        for index in range(1, 4):
            publisher.publish(sequence_meta(index))
        assert len(received_after(subscriber, 3)) == 3
        publisher.publish(sequence_meta(4))
        publisher.publish(sequence_meta(5))
        started = time.monotonic()
        assert subscriber.wait_for(50, 0.3)
        # Not ended by the two that came (the kernel held the receive back): ended by the
        # timeout, which a slow machine can only make later.
        assert time.monotonic() - started >= 0.25
        assert [m.image_id for m in received(subscriber)] == [4, 5]
    finally:
        subscriber.close()
        publisher.close()


def test_messages_already_read_count(address: str) -> None:
    publisher, subscriber = connected(address)
    try:
        for index in range(1, 6):
            publisher.publish(sequence_meta(index))
        first = subscriber.receive_raw_batch(1, timeout_ms=int(HANG_GUARD_S * 1000))
        assert len(first) == 1  # the other four were read with it and wait in the reader
        started = time.monotonic()
        assert subscriber.wait_for(4, HANG_GUARD_S)
        assert time.monotonic() - started < HANG_GUARD_S / 2
        assert [m.image_id for m in received(subscriber)] == [2, 3, 4, 5]
    finally:
        subscriber.close()
        publisher.close()


def test_without_a_publisher_the_wait_returns_at_once(address: str) -> None:
    publisher, subscriber = connected(address)
    publisher.close()
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while subscriber.connected:  # the reader notices the closed connection on a read
            subscriber.receive(timeout_ms=10)
            assert time.monotonic() < deadline
        started = time.monotonic()
        assert subscriber.wait_for(10, HANG_GUARD_S)
        assert time.monotonic() - started < HANG_GUARD_S / 2
    finally:
        subscriber.close()


def test_libzmq_cannot_count(address: str) -> None:
    publisher, subscriber = connected(address, streams.LIBZMQ)
    try:
        assert subscriber.wait_for(10, HANG_GUARD_S) is False
    finally:
        subscriber.close()
        publisher.close()
