"""One open writer file: image chunks by direct chunk write, per-image records, close.

Per image the hot path is one `H5Dwrite_chunk` (plus a `set_extent` when the image
extends the dataset, through hdf5_calls: straight into libhdf5); every few dozen MB the
written data is pushed out of the page cache (write_behind). In files created with
`direct_io` (uncompressed images, direct_io) the `set_extent` allocates the image's chunk,
whose place the writer derives from the file's end of allocation, and the image goes
there with one O_DIRECT `pwrite()` from the ring slot (whose address the slot view
carries); images that cannot (unaligned buffer) take the HDF5 path above.

Per-image records (`metadata` and the detector columns) are collected in Python lists
(cheaper per image than numpy item assignments), moved into numpy arrays and written in
contiguous runs at `flush()`, which the writer calls about once a second and at close; a
SWMR reader therefore sees `data` grow image by image and `metadata` at most about a
second behind. Until `close()` the `n_images` attribute is -1; after it, `data`,
`metadata` and the columns all have `n_images` entries.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from stddaq_common.bus.metadata import DetectorInfo
from stddaq_writer.direct_io import VERIFY_EVERY, DirectChunkWriter, align_up
from stddaq_writer.h5_layout import (
    METADATA_DTYPE,
    STATUS_MISSING,
    FileSpec,
    ImageFileHandles,
    create_image_file,
)
from stddaq_writer.hdf5_calls import GrowCalls
from stddaq_writer.write_behind import WriteBehind

log = logging.getLogger("stddaq.writer")

CHUNK_ZEROS, CHUNK_IMAGE, CHUNK_UNKNOWN = 0, 1, 2
"""What a chunk of a direct-I/O file holds: zeros (new file space or zeroed), an image
written, or unknown (placed by the index, never written: zeroed before close)."""

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
        self.capacity = capacity
        # Plain lists, turned into the arrays above by `runs()`: a Python int appended to a
        # list costs a fraction of a numpy item assignment.
        self._indices: list[int] = []
        self._ids: list[int] = []
        self._statuses: list[int] = []
        self._values: list[list[int]] = [[] for _ in range(n_columns)]
        self._zeros = [0] * n_columns

    @property
    def full(self) -> bool:
        """True when no further record fits."""
        return self.count == self.capacity

    def add(self, index: int, image_id: int, status: int, values: list[int] | None) -> None:
        """Hold one record (the caller flushes first when `full`)."""
        self._indices.append(index)
        self._ids.append(image_id)
        self._statuses.append(status)
        for column, value in zip(self._values, values or self._zeros, strict=True):
            column.append(value)
        self.count += 1

    def _pack(self) -> None:
        """Move the held records from the lists into the arrays (positions 0..count-1)."""
        count = self.count
        self.indices[:count] = self._indices
        self.records["image_id"][:count] = self._ids
        self.records["status"][:count] = self._statuses
        for number, column in enumerate(self._values):
            self.values[number, :count] = column

    def runs(self) -> list[tuple[int, int, np.ndarray[Any, Any]]]:
        """The held records as (first index, stop index, positions) runs of consecutive indices."""
        self._pack()
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
        self._indices.clear()
        self._ids.clear()
        self._statuses.clear()
        for column in self._values:
            column.clear()


class ImageFile:
    """A writer file being written: create it, write chunks and records, close it."""

    def __init__(
        self, handles: ImageFileHandles, spec: FileSpec, path: str, write_behind_bytes: int = 0
    ) -> None:
        self.path = path
        self.spec = spec
        self._handles = handles
        self._data_id = handles.data.id
        self._grow = GrowCalls(handles.file.id, handles.data.id, 3)
        self._image_shape = (spec.height, spec.width)
        self._chunk_bytes = spec.image_bytes
        self._columns = tuple(column.value_of for column in spec.columns)
        self._direct: DirectChunkWriter | None = handles.direct
        self._early = handles.direct is not None
        """`data` allocates its chunks early and writes no fill (files made for direct I/O)."""
        self._offsets = np.full(1024 if handles.direct else 0, -1, np.int64)
        """Per index: the chunk's file offset (direct I/O), -1 while unknown."""
        self._state = np.full(len(self._offsets), CHUNK_UNKNOWN, np.int8)
        """Per index (direct I/O): CHUNK_ZEROS, CHUNK_IMAGE or CHUNK_UNKNOWN."""
        self._behind = WriteBehind(path, write_behind_bytes)
        self._extent = 0
        self._pending = PendingRecords(len(spec.columns))
        self._zero_image = np.zeros((spec.height, spec.width), spec.dtype)
        self.n_written = 0
        self.direct_writes = 0
        """Chunks written with O_DIRECT (the rest of `bytes_written` went through HDF5)."""
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
        direct_io: bool = False,
    ) -> ImageFile:
        """Create the file (see h5_layout.create_image_file) and return it open; with
        `write_behind_bytes` > 0 its data leaves the page cache behind the writes; with
        `direct_io`, uncompressed images are written with O_DIRECT where possible."""
        handles = create_image_file(
            path, spec, attributes=attributes, params=params, daq_config=daq_config,
            direct_io=direct_io,
        )
        return cls(handles, spec, path, write_behind_bytes)

    @property
    def direct_io(self) -> bool:
        """True while image chunks are written with O_DIRECT."""
        return self._direct is not None

    @property
    def extent(self) -> int:
        """Current length of the `data` dataset (highest index written + 1)."""
        return self._extent

    def _grow_to(self, length: int) -> None:
        if length <= self._extent:
            return
        if not self._early:
            self._grow.set_extent((length, *self._image_shape))
            self._extent = length
            return
        while self._extent < length:  # one chunk per step: each step's place is known
            self._grow_one()

    def _grow_one(self) -> None:
        """Extend `data` by one image (early-allocated file) and, while O_DIRECT is on, note
        where its chunk was allocated."""
        index = self._extent
        grow = self._grow
        before = grow.filesize()
        grow.set_extent((index + 1, *self._image_shape))
        after = grow.filesize()
        self._extent = index + 1
        if index >= len(self._offsets):
            more = max(len(self._offsets), index + 1 - len(self._offsets))
            self._offsets = np.concatenate([self._offsets, np.full(more, -1, np.int64)])
            self._state = np.concatenate([self._state, np.full(more, CHUNK_UNKNOWN, np.int8)])
        if self._direct is None:
            return  # state stays unknown: zeroed through HDF5 unless an image is written
        chunk_bytes = self._chunk_bytes
        fresh = after == align_up(before) + chunk_bytes
        offset = after - chunk_bytes if fresh else None
        if offset is None or index % VERIFY_EVERY == 0:
            actual = self._chunk_offset_from_index(index)
            if offset is not None and actual != offset:
                log.error("%s: chunk %d is at %s, not at %d as derived: O_DIRECT off for this file",
                          self.path, index, actual, offset)
                self._direct_off()
                return
            offset = actual
        self._offsets[index] = offset
        self._state[index] = CHUNK_ZEROS if fresh else CHUNK_UNKNOWN

    def _chunk_offset_from_index(self, index: int) -> int:
        info = self._data_id.get_chunk_info_by_coord((index, 0, 0))
        if info.byte_offset is None or info.size != self.spec.image_bytes:
            raise OSError(f"HDF5 allocated no {self.spec.image_bytes}-byte chunk for image {index}")
        return int(info.byte_offset)

    def _direct_off(self) -> None:
        """Stop O_DIRECT for this file: the rest goes through HDF5 (written chunks stay)."""
        if self._direct is not None:
            self._direct.close()
            self._direct = None

    def write_chunk(self, index: int, chunk: Any, address: int | None = None) -> None:
        """Store one image's chunk bytes (raw, or filter-32008 bytes) at `index` as they are
        (`address`: where the chunk's bytes are in memory, if known: see DirectChunkWriter)."""
        if index >= self._extent:
            self._grow_to(index + 1)
        nbytes = memoryview(chunk).nbytes
        direct = self._direct
        early = self._early
        if early:  # a write that fails part-way leaves the chunk unknown (zeroed at close)
            state = self._state
            state[index] = CHUNK_UNKNOWN
        if direct is not None and direct.write(int(self._offsets[index]), chunk, address):
            self.direct_writes += 1
        else:
            self._data_id.write_direct_chunk((index, 0, 0), chunk)
            self._behind.wrote(nbytes)
        if early:
            state[index] = CHUNK_IMAGE
        self.bytes_written += nbytes

    def clear_chunk(self, index: int) -> None:
        """Overwrite the chunk at `index` with zeros (the fill value) through the filters."""
        self._grow_to(index + 1)
        if self._early:
            self._zero(index)
            return
        self._handles.data[index] = self._zero_image

    def _zero(self, index: int) -> None:
        """Early-allocated file: make chunk `index` read as zeros unless it is untouched new
        space (a hole punched, or zeros written through HDF5 once O_DIRECT is off)."""
        if self._state[index] == CHUNK_ZEROS:
            return
        if self._direct is not None and self._offsets[index] >= 0:
            self._direct.zero(int(self._offsets[index]))
        else:
            self._handles.data[index] = self._zero_image
        self._state[index] = CHUNK_ZEROS

    def record_written(
        self, index: int, image_id: int, status: int, detail: DetectorInfo | None
    ) -> None:
        """Record a written image: its metadata record and detector columns."""
        values = None
        if detail is not None and self._columns:
            values = [value_of(detail) for value_of in self._columns]
        pending = self._pending
        if pending.full:
            self._write_records()
        pending.add(index, image_id, status, values)
        self.n_written += 1

    def record_missing(self, index: int, image_id: int) -> None:
        """Record an image that is not in the file: status missing, its chunk left at zeros."""
        self._grow_to(index + 1)
        if self._early:
            self._zero(index)
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
            self._zero_unwritten()
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
        self._direct_off()
        try:
            self._handles.file.close()
        except BaseException as error:
            first_error = first_error or error
        self.closed = True
        if first_error is not None:
            raise first_error
        return self.summary()

    def _zero_unwritten(self) -> None:
        """Direct I/O: every chunk without an image that is not proven new space gets zeros."""
        if not self._early:
            return
        for index in np.flatnonzero(self._state[: self._extent] == CHUNK_UNKNOWN):
            self._zero(int(index))

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
