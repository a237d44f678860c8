"""One acquisition of one writer: open its file as the right user, write, fail or close.

Every failure becomes a reason that names what was wrong (the path, the errno text), the
file is closed so that what was written stays valid, and the writer carries on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stddaq_common.bus.driver_writer import CreateCommand
from stddaq_common.bus.metadata import ImageMeta
from stddaq_writer.chunk_writer import ChunkWriter, Outcome, ReadMode, RingLike
from stddaq_writer.disk_reserve import DiskReserve, file_size_budget
from stddaq_writer.h5_layout import FileSpec
from stddaq_writer.image_file import FileSummary, ImageFile
from stddaq_writer.uid import FileOwner, UserSwitchError, acting_as

log = logging.getLogger("stddaq.writer")

MAX_MISSING_IDS_PER_EVENT = 10_000
"""missing_ids beyond this many per event are counted in `missing` but not listed."""

_ERRNO_IN_HDF5_MESSAGE = re.compile(r"errno = (\d+)")


class AcquisitionError(Exception):
    """The acquisition cannot go on; the message is the reason reported to the driver."""


def describe_os_error(error: BaseException) -> str:
    """A short, specific text for an OSError from os or from HDF5 (which hides errno)."""
    number = getattr(error, "errno", None)
    if not isinstance(number, int):
        match = _ERRNO_IN_HDF5_MESSAGE.search(str(error))
        number = int(match.group(1)) if match else None
    if isinstance(number, int) and number in errno.errorcode:
        return f"{os.strerror(number)} ({errno.errorcode[number]})"
    return str(error)


def check_new_file(path: str) -> None:
    """Refuse paths the writer must not create: relative, with '..', an existing file (never
    overwritten), a directory that cannot be made. A missing directory is created (mode 0o775),
    as the file's owner: call this as that user."""
    if not os.path.isabs(path):
        raise AcquisitionError(f"file path {path!r} is not absolute")
    if ".." in path.split(os.sep):
        raise AcquisitionError(f"file path {path!r} contains '..'")
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o775, exist_ok=True)
    except FileExistsError:
        raise AcquisitionError(f"cannot create {path}: {directory} is not a directory") from None
    except OSError as error:
        raise AcquisitionError(
            f"cannot create {path}: cannot make directory {directory}: {describe_os_error(error)}"
        ) from None
    if os.path.lexists(path):
        raise AcquisitionError(f"cannot create {path}: the file exists (never overwritten)")


@dataclass(slots=True)
class Progress:
    """What has not been reported to the driver yet."""

    missing_ids: list[int] = field(default_factory=list)
    dirty: bool = False


class Acquisition:
    """The open file of one acquisition, the user it is written as, and its counts."""

    def __init__(
        self,
        command: CreateCommand,
        spec: FileSpec,
        ring: RingLike,
        *,
        owner: FileOwner | None,
        read_mode: ReadMode,
        write_behind_bytes: int = 0,
        direct_io: bool = False,
        reserve_bytes: int,
        daq_config: dict[str, Any],
    ) -> None:
        """Create the file (as `owner`); AcquisitionError with the reason if impossible."""
        self.command = command
        self.acq_id = command.acq_id or 0
        self.path = command.file or ""
        self.failure: str | None = None
        self.progress = Progress()
        self.summary: FileSummary | None = None
        self.ring_name_reported = False
        self._flushed_at_close: int | None = None
        self._flush_asked: int | None = None
        """The file's flush count when a flush was left for the next block boundary."""
        self._pace = (0.0, 0)
        """(monotonic s, images written) at the last timed flush: the rate of growth."""
        self.close_failed = False
        self._budget = file_size_budget(reserve_bytes)
        self._image_bytes = spec.image_bytes
        self._raw_chunks = spec.compression == "none"
        """Every chunk is exactly `_image_bytes` long (an uncompressed file)."""
        self._user = contextlib.ExitStack()
        self._reserve: DiskReserve | None = None
        try:
            self._user.enter_context(acting_as(owner))
            check_new_file(self.path)
            self._reserve = DiskReserve(self.path, reserve_bytes)
            self.file = ImageFile.create(
                self.path,
                spec,
                attributes={
                    "acquisition_id": np.int64(self.acq_id),
                    "writer_index": np.int64(command.writer_index),
                    "n_writers": np.int64(command.n_writers),
                    "file_uid": np.int64(owner.uid if owner else os.geteuid()),
                },
                params=command.params,
                daq_config=daq_config,
                write_behind_bytes=write_behind_bytes,
                direct_io=direct_io,
            )
        except (AcquisitionError, UserSwitchError) as error:
            self._undo()
            raise AcquisitionError(str(error)) from None
        except OSError as error:
            self._undo()
            raise AcquisitionError(f"cannot create {self.path}: {describe_os_error(error)}") from None
        self.writer = ChunkWriter(ring, self.file, read_mode)

    def _undo(self) -> None:
        if self._reserve is not None:
            self._reserve.release()
        self._user.close()

    @property
    def open(self) -> bool:
        """True while images can be written."""
        return self.failure is None and self.summary is None

    def write(self, index: int, meta: ImageMeta) -> Outcome:
        """Write one image; AcquisitionError (file closed) if the file cannot take it."""
        if self._budget is not None and self.file.bytes_written + self._image_bytes > self._budget[0]:
            self.fail(
                f"writing {self.path} stopped at index {index}: the file reached the file-size "
                f"limit (RLIMIT_FSIZE {self._budget[1]} bytes, less the room kept to close the "
                "file): File too large (EFBIG)"
            )
            raise AcquisitionError(self.failure)
        try:
            outcome = self.writer.write_image(index, meta)
        except OSError as error:
            self.fail(f"writing {self.path} failed at index {index}: {describe_os_error(error)}")
            raise AcquisitionError(self.failure) from None
        self.progress.dirty = True
        if outcome is not Outcome.WRITTEN and len(self.progress.missing_ids) < MAX_MISSING_IDS_PER_EVENT:
            self.progress.missing_ids.append(meta.image_id)
        return outcome

    def write_images(self, first: int, metas: list[ImageMeta]) -> None:
        """Write `metas[k]` at index `first + k`, as `write` one by one would (the writer's
        counts tell what became of them); AcquisitionError (file closed) at the first image
        the file cannot take, those before it written. Images that surely fit under the
        file-size limit go to the chunk writer together, the others one by one."""
        fit = len(metas)
        budget = self._budget
        if budget is not None:  # compressed chunks vary in size: each one checked
            room = (budget[0] - self.file.bytes_written) // self._image_bytes
            fit = max(0, min(fit, room)) if self._raw_chunks else 0
        writer = self.writer
        progress = self.progress
        missing = progress.missing_ids
        try:
            if fit:
                writer.write_images(first, metas[:fit] if fit < len(metas) else metas, missing)
        except OSError as error:
            self.fail(f"writing {self.path} failed at index {writer.at_index}: {describe_os_error(error)}")
            raise AcquisitionError(self.failure) from None
        finally:
            progress.dirty = True
            if len(missing) > MAX_MISSING_IDS_PER_EVENT:
                del missing[MAX_MISSING_IDS_PER_EVENT:]
        for index in range(fit, len(metas)):  # near the file-size limit: each one checked
            self.write(first + index, metas[index])

    def record_unreadable(self, index: int) -> None:
        """An image whose metadata could not be decoded: missing, id unknown (0)."""
        try:
            self.file.record_missing(index, 0)
        except OSError as error:
            self.fail(f"writing {self.path} failed at index {index}: {describe_os_error(error)}")
            raise AcquisitionError(self.failure) from None
        self.writer.counts.rejected += 1
        self.progress.dirty = True

    @property
    def flushed(self) -> int:
        """Images written (status 1) as of the last flush: what the file is sure to hold
        even if the process is killed."""
        if self._flushed_at_close is not None:
            return self._flushed_at_close
        return self.file.n_flushed

    def flush(self) -> None:
        """Make everything so far visible to SWMR readers; AcquisitionError on failure."""
        try:
            self.file.flush()
        except OSError as error:
            self.fail(f"flushing {self.path} failed: {describe_os_error(error)}")
            raise AcquisitionError(self.failure) from None

    def timed_flush(self, now: float, *, force: bool = False) -> bool:
        """The periodic SWMR flush: True once done (now, or at the block boundary it was
        left for since the last call); False while it waits for that boundary (`force`:
        now, dropping chunks allocated ahead). Sizes the file's growth blocks to the rate
        seen since the last timed flush. AcquisitionError on failure."""
        image_file = self.file
        asked = self._flush_asked
        try:
            if asked is None or image_file.flushes == asked:
                if force:
                    image_file.flush()
                elif not image_file.flush_when_aligned():
                    self._flush_asked = image_file.flushes
                    return False
        except OSError as error:
            self.fail(f"flushing {self.path} failed: {describe_os_error(error)}")
            raise AcquisitionError(self.failure) from None
        self._flush_asked = None
        then, written = self._pace
        if then and now > then:
            image_file.set_block((image_file.n_written - written) / (now - then))
        self._pace = (now, image_file.n_written)
        return True

    def fail(self, reason: str) -> None:
        """Stop on an error: give back the disk reserve, close the file, keep the reason."""
        if self.failure is not None or self.summary is not None:
            return
        self.failure = reason
        log.error("acquisition %d: %s", self.acq_id, reason)
        with contextlib.suppress(AcquisitionError):  # already failed: the first reason counts
            self._finish(None, reason)

    def close(self, n_images: int | None, reason: str = "") -> FileSummary:
        """Close normally with the driver's image count; AcquisitionError if that fails."""
        if self.summary is None:
            self._finish(n_images, reason)
        assert self.summary is not None
        return self.summary

    def _finish(self, n_images: int | None, reason: str) -> None:
        failed_close: str | None = None
        if self.failure is not None and self._reserve is not None:
            self._reserve.release()
        try:
            self.summary = self.file.close(n_images, reason)
            self._flushed_at_close = self.summary.n_written
        except (OSError, RuntimeError) as error:  # h5py raises RuntimeError for some failed closes
            self.close_failed = True
            failed_close = f"closing {self.path} failed: {describe_os_error(error)}"
            self.summary = self.file.summary()
        finally:
            if self._reserve is not None:
                self._reserve.release()
            self._user.close()
        if failed_close is not None:
            self.failure = self.failure or failed_close
            log.error("acquisition %d: %s", self.acq_id, failed_close)
            raise AcquisitionError(failed_close)

    @property
    def images_in_file(self) -> int:
        """Images written that the file holds: all of them, or only those flushed before
        if closing the file failed (e.g. a file-size limit: HDF5 could not finish it)."""
        return self.flushed if self.close_failed else self.writer.counts.written

    def take_missing_ids(self) -> list[int]:
        """The missing image ids not reported yet (and forget them)."""
        ids = self.progress.missing_ids
        self.progress.missing_ids = []
        self.progress.dirty = False
        return ids
