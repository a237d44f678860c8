"""Child-process peers for the stream tests (spawned: importable, light, no pytest).

The sequence of messages is a pure function of the index, so the test can rebuild what the
child sent and compare field by field.
"""

from __future__ import annotations

import os
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

from stddaq_common.bus.metadata import (
    Compression,
    DetectorInfo,
    Dtype,
    EgInfo,
    GfInfo,
    ImageMeta,
    JfInfo,
    PcoInfo,
    Status,
)
from stddaq_common.bus.metadata_stream import MetadataPublisher

PROBE_ID = 0
"""image_id of the probe messages sent until the subscriber is known to be connected."""

_DTYPES = [d for d in Dtype if d is not Dtype.UNKNOWN]
_HANG_GUARD_S = 60.0


def probe() -> ImageMeta:
    """A valid message the subscriber skips: only tells it that the stream is up."""
    return ImageMeta(PROBE_ID, 1, 1, 1, Dtype.UINT8, Status.UNDEFINED)


def sequence_meta(index: int) -> ImageMeta:
    """Message number `index` (>= 1): every field and every oneof member varies with it."""
    details: list[DetectorInfo | None] = [
        PcoInfo(1_700_000_000 + index, index * 7 % 1_000_000_000, f"CAM{index % 3}:FPICTURE-µ"),
        GfInfo(index % 2**32, index * 3, index * 5, 2**63 + index, index * 11, index % 2 == 0),
        JfInfo(2**64 - index),
        EgInfo(index * 13),
        None,
    ]
    return ImageMeta(
        image_id=index,
        height=1 + index % 4096,
        width=1 + index * 7 % 4096,
        size=index * 1024,
        dtype=_DTYPES[index % len(_DTYPES)],
        status=list(Status)[index % len(Status)],
        compression=list(Compression)[index % len(Compression)],
        detail=details[index % len(details)],
    )


def publish_sequence(address: str, count: int, go: Event, done: Event, results: Queue) -> None:  # type: ignore[type-arg]
    """Bind, send probes until `go`, then messages 1..count; keep the socket until `done`.

    A message that does not fit (publish False) is sent again: this peer must deliver all.
    Puts (messages published after the probes, dropped) on `results`.
    """
    with MetadataPublisher(address) as publisher:
        while not go.wait(0.005):
            publisher.publish(probe())
        probes = publisher.published
        for index in range(1, count + 1):
            meta = sequence_meta(index)
            while not publisher.publish(meta):
                os.sched_yield()
        results.put((publisher.published - probes, publisher.dropped))
        done.wait(_HANG_GUARD_S)


def bind_and_crash(address: str, bound: Event) -> None:
    """Bind a publisher and exit without closing it, leaving a stale socket file behind."""
    MetadataPublisher(address)
    bound.set()
    os._exit(3)
