"""One acquisition: its plan, the dealing of images to writers, and what writers report.

Pure bookkeeping, no sockets and no threads: the engine feeds it image ids and writer
events and turns it into status snapshots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from stddaq_common.bus.driver_writer import EventKind, WriterEvent
from stddaq_driver.status_board import AcquisitionSnapshot, WriterSnapshot

MAX_MISSING_IDS_KEPT = 1000
"""Missing image ids kept per acquisition for the status (the count is always exact)."""


class IdsWentBackwards(Exception):
    """An image id not greater than the last one: the image source restarted."""

    def __init__(self, last_id: int, image_id: int) -> None:
        self.last_id = last_id
        self.image_id = image_id
        super().__init__(
            f"image ids went backwards ({image_id} after {last_id}): the image source "
            "restarted during the acquisition"
        )


def writer_file(path: str, file_prefix: str, index: int) -> str:
    """`<path>/<file_prefix><index>.h5`, the file writer `index` writes."""
    return os.path.join(path, f"{file_prefix}{index}.h5")


def master_file(path: str, file_prefix: str) -> str:
    """`<path>/<file_prefix>.h5`, the master file (virtual datasets over the writer files)."""
    return os.path.join(path, f"{file_prefix}.h5")


def images_per_writer(n_dealt: int, n_writers: int) -> list[int]:
    """How many of `n_dealt` round-robin-dealt images each writer got."""
    return [(n_dealt - k + n_writers - 1) // n_writers for k in range(n_writers)]


@dataclass(frozen=True, slots=True)
class AcquisitionPlan:
    """What was asked for and the files it will produce."""

    acquisition_id: int
    path: str
    file_prefix: str
    n_image: int | None
    uid: int
    compression: str
    n_writers: int
    detector: str
    config: dict[str, Any]
    started_at: float

    @property
    def files(self) -> tuple[str, ...]:
        """The writer files in writer order."""
        return tuple(writer_file(self.path, self.file_prefix, k) for k in range(self.n_writers))

    @property
    def master_file(self) -> str | None:
        """The master file, only with more than one writer."""
        return master_file(self.path, self.file_prefix) if self.n_writers > 1 else None

    @property
    def params(self) -> dict[str, Any]:
        """The acquisition request as sent to the writers (they store it as attributes)."""
        return {
            "path": self.path,
            "file_prefix": self.file_prefix,
            "n_image": self.n_image,
            "writer_id": self.uid,
            "compression": self.compression,
        }


class ImageDealer:
    """Deals images round-robin: image j goes to writer j % N at index j // N.

    Ids must grow: a gap counts the ids in it as missing, a repeated id is skipped (and
    counted), a smaller id raises IdsWentBackwards.
    """

    __slots__ = (
        "acquisition_id",
        "dealt",
        "first_id",
        "id_gaps",
        "last_id",
        "n_image",
        "n_writers",
        "repeated_ids",
    )

    def __init__(self, acquisition_id: int, n_writers: int, n_image: int | None) -> None:
        self.acquisition_id = acquisition_id
        self.n_writers = n_writers
        self.n_image = n_image
        self.dealt = 0
        self.id_gaps = 0
        self.repeated_ids = 0
        self.first_id: int | None = None
        self.last_id: int | None = None

    def deal(self, image_id: int) -> tuple[int, int] | None:
        """(writer, position in that writer's file) for this image; None for a repeated id."""
        last = self.last_id
        if last is None:
            self.first_id = image_id
        elif image_id <= last:
            if image_id == last:
                self.repeated_ids += 1
                return None
            raise IdsWentBackwards(last, image_id)
        else:
            self.id_gaps += image_id - last - 1
        self.last_id = image_id
        position = self.dealt
        self.dealt = position + 1
        index, writer = divmod(position, self.n_writers)
        return writer, index

    @property
    def is_complete(self) -> bool:
        """n_image images were dealt."""
        return self.n_image is not None and self.dealt >= self.n_image

    def per_writer(self) -> list[int]:
        """Images dealt to each writer so far."""
        return images_per_writer(self.dealt, self.n_writers)


@dataclass(slots=True)
class WriterTracker:
    """What one writer reported for the current acquisition."""

    index: int
    state: str = "creating"
    written: int = 0
    not_written: int = 0
    bytes_written: int = 0
    missing_ids: list[int] = field(default_factory=list)
    last_error: str | None = None
    write_latency_s: float | None = None
    restarted: bool = False
    """The writer's process was replaced during the acquisition (its events are ignored)."""
    flushed: int = 0
    """Images its file holds for sure (as of its last flush), also if it was killed."""

    lost: bool = False
    """The writer is gone for this acquisition (its later messages are not taken)."""

    def mark_lost(self, reason: str) -> None:
        """The writer is gone (killed, restarted, unreachable): count only the images its
        file is sure to hold, and keep the reason."""
        self.lost = True
        self.state = "error"
        self.written = min(self.written, self.flushed)
        self.last_error = reason

    def restarted_by(self, event: WriterEvent, acquisition_id: int) -> bool:
        """True if `event` shows that this writer, which had the acquisition's file open,
        is a new process: a `ready` (its first answer to a probe) or a heartbeat that does
        not name this acquisition.
        (A std_daq writer's plain answers say nothing about this.)"""
        if self.state not in ("file_created", "confirmed") or not event.stddaq:
            return False
        # A writer answers its first probe with `ready` naming the acquisition it has open:
        # a process that created this acquisition's file may say `ready` late (its first
        # probe came after the create); a new process has no file open.
        return event.event in (EventKind.READY, EventKind.HEARTBEAT) and event.acq_id != acquisition_id

    def apply(self, event: WriterEvent) -> None:
        """Take the figures of an event of this acquisition (counts are cumulative)."""
        if event.written is not None:
            self.written = event.written
        if event.missing is not None:
            self.not_written = event.missing
        if event.bytes_written is not None:
            self.bytes_written = event.bytes_written
        if event.write_latency_s is not None:
            self.write_latency_s = event.write_latency_s
        if event.flushed is not None:
            self.flushed = event.flushed
        room = MAX_MISSING_IDS_KEPT - len(self.missing_ids)
        if room > 0 and event.missing_ids:
            self.missing_ids.extend(event.missing_ids[:room])
        if event.event == EventKind.FILE_CREATED:
            self.state = "file_created"
        elif event.event == EventKind.CONFIRMED:
            self.state = "confirmed"
        elif event.event == EventKind.CLOSED:
            self.state = "closed"
        elif event.event == EventKind.ERROR:
            self.state = "error"
            self.last_error = event.reason or "the writer reported an error without a reason"

    def snapshot(self) -> WriterSnapshot:
        """An immutable copy for the status."""
        return WriterSnapshot(
            index=self.index,
            state=self.state,
            images_written=self.written,
            images_not_written=self.not_written,
            bytes_written=self.bytes_written,
            images_flushed=self.flushed,
            last_error=self.last_error,
        )


class Acquisition:
    """The running acquisition: plan, dealer and writer trackers."""

    def __init__(self, plan: AcquisitionPlan) -> None:
        self.plan = plan
        self.dealer = ImageDealer(plan.acquisition_id, plan.n_writers, plan.n_image)
        self.writers = [WriterTracker(k) for k in range(plan.n_writers)]
        self._files = plan.files
        self._master_file = plan.master_file
        """The plan's file names, made once (the status is published 10 times a second)."""
        self.master_state: str | None = None
        self.error: str | None = None

    def all_writers_in(self, *states: str) -> bool:
        """True when every writer is in one of `states`."""
        return all(tracker.state in states for tracker in self.writers)

    def snapshot(self, base: AcquisitionSnapshot) -> AcquisitionSnapshot:
        """`base` (carrying the state) with this acquisition's figures."""
        dealer = self.dealer
        missing_ids: list[int] = []
        for tracker in self.writers:
            missing_ids.extend(tracker.missing_ids)
        missing_ids.sort()
        return replace(
            base,
            acquisition_id=self.plan.acquisition_id,
            path=self.plan.path,
            file_prefix=self.plan.file_prefix,
            n_image=self.plan.n_image,
            compression=self.plan.compression,
            files=self._files,
            master_file=self._master_file,
            images_dealt=dealer.dealt,
            images_written=sum(t.written for t in self.writers),
            id_gaps=dealer.id_gaps,
            images_not_written=sum(t.not_written for t in self.writers),
            missing_ids=tuple(missing_ids[:MAX_MISSING_IDS_KEPT]),
            first_image_id=dealer.first_id,
            last_image_id=dealer.last_id,
            bytes_written=sum(t.bytes_written for t in self.writers),
            started_at=self.plan.started_at,
            last_error=self.error,
            writers=tuple(t.snapshot() for t in self.writers),
        )
