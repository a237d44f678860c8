"""One open writer file: image chunks by direct chunk write, per-image records, close.

Per image the hot path is one `H5Dwrite_chunk` (plus a `set_extent` when the image
extends the dataset, ~3 us); every few dozen MB the written data is pushed out of the page
cache (write_behind). Per-image records (`metadata` and the detector columns) are
collected in numpy arrays and written in contiguous runs at `flush()`, which the writer
calls about once a second and at close; a SWMR reader therefore sees `data` grow image by
image and `metadata` at most about a second behind. Until `close()` the `n_images`
attribute is -1; after it, `data`, `metadata` and the columns all have `n_images` entries.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import numpy as np

from stddaq_common.bus.metadata import DetectorInfo
from stddaq_writer.h5_layout import (
    METADATA_DTYPE,
    STATUS_MISSING,
    FileSpec,
    ImageFileHandles,
    create_image_file,
)
from stddaq_writer.write_behind import WriteBehind

PENDING_RECORDS = 1024
"""Records held before they are written even without a flush."""


@dataclass(frozen=True, slots=True)
class FileSummary:
    """What a closed file holds."""

    path: str
    n_images: int
    n_written: int
    n_missing: int
    bytes_written: int


class PendingRecords:
    """Per-image records (index, metadata record, column values) not yet in the file."""

    def __init__(self, n_columns: int, capacity: int = PENDING_RECORDS) -> None:
        self.indices = np.zeros(capacity, np.int64)
        self.records = np.zeros(capacity, METADATA_DTYPE)
        self.values = np.zeros((n_columns, capacity), np.uint64)
        self.count = 0

    @property
    def full(self) -> bool:
        """True when no further record fits."""
        return self.count == len(self.indices)

    def add(self, index: int, image_id: int, status: int, values: list[int] | None) -> None:
        """Hold one record (the caller flushes first when `full`)."""
        slot = self.count
        self.indices[slot] = index
        self.records[slot] = (image_id, status)
        if values is not None:
            self.values[:, slot] = values
        else:
            self.values[:, slot] = 0
        self.count = slot + 1

    def runs(self) -> list[tuple[int, int, np.ndarray[Any, Any]]]:
        """The held records as (first index, stop index, positions) runs of consecutive indices."""
        order = np.argsort(self.indices[: self.count], kind="stable")
        indices = self.indices[order]
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        return [
            (int(indices[part[0]]), int(indices[part[-1]]) + 1, order[part])
            for part in np.split(np.arange(len(order)), breaks)
            if len(part)
        ]

    def clear(self) -> None:
        """Forget every held record."""
        self.count = 0


class ImageFile:
    """A writer file being written: create it, write chunks and records, close it."""

    def __init__(
        self, handles: ImageFileHandles, spec: FileSpec, path: str, write_behind_bytes: int = 0
    ) -> None:
        self.path = path
        self.spec = spec
        self._handles = handles
        self._data_id = handles.data.id
        self._behind = WriteBehind(path, write_behind_bytes)
        self._extent = 0
        self._pending = PendingRecords(len(spec.columns))
        self._zero_image = np.zeros((spec.height, spec.width), spec.dtype)
        self.n_written = 0
        self.n_missing = 0
        self.bytes_written = 0
        self.closed = False

    @classmethod
    def create(
        cls,
        path: str,
        spec: FileSpec,
        *,
        attributes: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        daq_config: dict[str, Any] | None = None,
        write_behind_bytes: int = 0,
    ) -> ImageFile:
        """Create the file (see h5_layout.create_image_file) and return it open; with
        `write_behind_bytes` > 0 its data leaves the page cache behind the writes."""
        handles = create_image_file(
            path, spec, attributes=attributes, params=params, daq_config=daq_config
        )
        return cls(handles, spec, path, write_behind_bytes)

    @property
    def extent(self) -> int:
        """Current length of the `data` dataset (highest index written + 1)."""
        return self._extent

    def _grow_to(self, length: int) -> None:
        if length > self._extent:
            self._data_id.set_extent((length, self.spec.height, self.spec.width))
            self._extent = length

    def write_chunk(self, index: int, chunk: Any) -> None:
        """Store one image's chunk bytes (raw, or filter-32008 bytes) at `index` as they are."""
        if index >= self._extent:
            self._grow_to(index + 1)
        self._data_id.write_direct_chunk((index, 0, 0), chunk)
        nbytes = memoryview(chunk).nbytes
        self.bytes_written += nbytes
        self._behind.wrote(nbytes)

    def clear_chunk(self, index: int) -> None:
        """Overwrite the chunk at `index` with zeros (the fill value) through the filters."""
        self._grow_to(index + 1)
        self._handles.data[index] = self._zero_image

    def record_written(
        self, index: int, image_id: int, status: int, detail: DetectorInfo | None
    ) -> None:
        """Record a written image: its metadata record and detector columns."""
        values = None
        if detail is not None and self.spec.columns:
            values = [column.value_of(detail) for column in self.spec.columns]
        self._hold(index, image_id, status, values)
        self.n_written += 1

    def record_missing(self, index: int, image_id: int) -> None:
        """Record an image that is not in the file: status missing, its chunk left at zeros."""
        self._grow_to(index + 1)
        self._hold(index, image_id, STATUS_MISSING, None)
        self.n_missing += 1

    def _hold(self, index: int, image_id: int, status: int, values: list[int] | None) -> None:
        if self._pending.full:
            self._write_records()
        self._pending.add(index, image_id, status, values)

    def _write_records(self) -> None:
        handles = self._handles
        length = self._extent
        handles.metadata.resize((length,))
        for column in handles.columns:
            column.resize((length,))
        pending = self._pending
        for start, stop, positions in pending.runs():
            handles.metadata[start:stop] = pending.records[positions]
            for number, column in enumerate(handles.columns):
                column[start:stop] = pending.values[number, positions]
        pending.clear()

    def flush(self) -> None:
        """Write the held records and flush, so that SWMR readers see everything so far."""
        self._write_records()
        self._handles.file.flush()

    def close(self, n_images: int | None = None, reason: str = "") -> FileSummary:
        """Finish the file: final length, held records, final attributes, close.

        `n_images` (from the driver) may exceed what arrived: the tail is then missing
        (zeros, status 0). The file handle is closed even when a step fails (e.g. on a
        full disk); the first error is raised after closing.
        """
        if self.closed:
            return self.summary()
        first_error: BaseException | None = None
        try:
            self._grow_to(max(n_images or 0, self._extent))
            self._write_records()
            group = self._handles.group
            group.attrs["n_images"] = np.int64(self._extent)
            group.attrs["n_written"] = np.int64(self.n_written)
            group.attrs["n_missing"] = np.int64(self.summary().n_missing)
            group.attrs["closed_at"] = datetime.datetime.now(datetime.UTC).isoformat()
            group.attrs["close_reason"] = reason
        except BaseException as error:  # closing must happen whatever failed
            first_error = error
        self._behind.close()
        try:
            self._handles.file.close()
        except BaseException as error:
            first_error = first_error or error
        self.closed = True
        if first_error is not None:
            raise first_error
        return self.summary()

    def summary(self) -> FileSummary:
        """Counts so far."""
        never_arrived = max(0, self._extent - self.n_written - self.n_missing)
        return FileSummary(
            self.path,
            self._extent,
            self.n_written,
            self.n_missing + never_arrived,
            self.bytes_written,
        )
