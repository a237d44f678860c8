"""One open writer file: image chunks by direct chunk write, per-image records, close.

Per image the hot path is one `H5Dwrite_chunk` (plus a `set_extent` when the image
extends the dataset, through hdf5_calls: straight into libhdf5); every few dozen MB the
written data is pushed out of the page cache (write_behind). In files created with
`direct_io` (uncompressed images, direct_io) `data` is allocated early and grown by a
block of chunks at a time (1 to MAX_BLOCK, about BLOCK_SECONDS of images at the rate of
the last second: `set_block`), whose places the writer derives from the file's end of
allocation; each image goes to its chunk with one O_DIRECT `pwrite()` from the ring slot
(whose address the slot view carries), or several chunks that follow each other with one
gathered `pwritev()` (`write_chunks`: a batch of images); images that cannot (unaligned
buffer) take the HDF5 path above.

What SWMR readers see: the file as of the last flush (HDF5 writes the dataset's extent
and chunk index only then). A flush always gives `data` exactly the images written or
recorded so far (`extent`): the timed flush (`flush_when_aligned`) waits for the end of
the current block (done right before the next growth), an explicit `flush()` or the
close drops the chunks allocated ahead (`_trim`; SWMR-write mode never reuses their file
space: an acquisition stopped mid-block leaves at most MAX_BLOCK - 1 never-written
chunks of address space in the file, a hole that takes no disk blocks).

Per-image records (`metadata` and the detector columns) are collected in Python lists
(cheaper per image than numpy item assignments), moved into numpy arrays and written in
contiguous runs at each flush, which the writer does about once a second and at close;
a SWMR reader therefore sees `data`, `metadata` and the columns with the same length, at
most about a second (plus a block) behind. Until `close()` the `n_images` attribute is
-1; after it, `data`, `metadata` and the columns all have `n_images` entries.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any

import h5py
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

MAX_BLOCK = 8
"""Most chunks `data` is grown by at once (early-allocated files)."""

BLOCK_SECONDS = 0.25
"""A growth block covers about this long at the current rate."""

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
        self._single = self._values[0] if n_columns == 1 else None

    @property
    def full(self) -> bool:
        """True when no further record fits."""
        return self.count == self.capacity

    def add(self, index: int, image_id: int, status: int, values: list[int] | None) -> None:
        """Hold one record (the caller flushes first when `full`)."""
        self._indices.append(index)
        self._ids.append(image_id)
        self._statuses.append(status)
        if self._single is not None:  # one column (pco: the timestamp)
            self._single.append(values[0] if values else 0)
        else:
            for column, value in zip(self._values, values or self._zeros, strict=True):
                column.append(value)
        self.count += 1

    def add_single(self, index: int, image_id: int, status: int, value: int) -> None:
        """`add` for a file with exactly one column: its `value` (the caller flushes first
        when `full`)."""
        self._indices.append(index)
        self._ids.append(image_id)
        self._statuses.append(status)
        self._values[0].append(value)
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


def _write_run(dataset: Any, start: int, values: np.ndarray[Any, Any], memory_type: Any) -> None:
    """`dataset[start:start + len(values)] = values` (1-D) through h5py's low-level calls,
    with the memory type made once per file (h5py's `__setitem__` makes a new type and
    selection objects on every call)."""
    file_space = dataset.id.get_space()
    file_space.select_hyperslab((start,), (len(values),))
    memory_space = h5py.h5s.create_simple((len(values),))
    dataset.id.write(memory_space, file_space, np.ascontiguousarray(values), memory_type)


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
        self._single_column = self._columns[0] if len(self._columns) == 1 else None
        self._direct: DirectChunkWriter | None = handles.direct
        self._early = handles.direct is not None
        """`data` allocates its chunks early and writes no fill (files made for direct I/O)."""
        self._offsets: list[int] = []
        """Per index (early allocation): the chunk's file offset, -1 while unknown."""
        self._state = bytearray()
        """Per index (early allocation): CHUNK_ZEROS, CHUNK_IMAGE or CHUNK_UNKNOWN (a
        bytearray and a list: an item costs a fraction of a numpy item assignment)."""
        self._allocated = 0
        """Length of `data` as HDF5 has it: `extent` plus the chunks allocated ahead."""
        self.block = 1
        """Chunks allocated per growth of an early-allocated `data` (set_block)."""
        self._flush_wanted = False
        """A flush is due: done at the next block boundary (flush_when_aligned)."""
        self._allocated_to: int | None = None
        """The file's end of allocation right after the last growth of `data`, as long as
        this file has made no other HDF5 call since (None: read it before growing)."""
        self._behind = WriteBehind(path, write_behind_bytes)
        self._extent = 0
        self._pending = PendingRecords(len(spec.columns))
        self._records_length = int(handles.metadata.shape[0])
        """Length of `metadata` and the columns as HDF5 has them."""
        self._record_type = h5py.h5t.py_create(METADATA_DTYPE)
        self._column_type = h5py.h5t.py_create(np.dtype("<u8"))
        self._zero_image = np.zeros((spec.height, spec.width), spec.dtype)
        self.n_written = 0
        self.direct_writes = 0
        """Chunks written with O_DIRECT (the rest of `bytes_written` went through HDF5)."""
        self.n_missing = 0
        self.bytes_written = 0
        self.closed = False
        self.flushes = 0
        """Flushes done so far (also those done at a block boundary)."""
        self.n_flushed = 0
        """Images written as of the last flush."""

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
        if length > self._allocated:
            if self._flush_wanted and self._allocated == self._extent:
                self.flush()  # at a block boundary: readers see exactly what is written
            self._grow_block(max(length, self._allocated + self.block))
        self._extent = length

    def _grow_block(self, length: int) -> None:
        """Extend `data` (early-allocated file) to `length` images in one `set_extent` and,
        while O_DIRECT is on, note where each new chunk was allocated.

        HDF5 allocates the new chunks one after the other in index order at the end of
        the file, each aligned (h5_layout). When the end of allocation grew by exactly
        that (alignment padding, then whole aligned chunks), chunk k of the block is at
        `align_up(before) + k * align_up(chunk_bytes)`: the only layout of that many
        aligned chunk-sized places in the new space in index order. The end of allocation
        before the growth is the one read after the previous growth when this file made
        no HDF5 call in between (nothing else can have allocated). Any other growth is
        resolved by asking the chunk index for each chunk of the block (HDF5 put
        something else, such as a block of its metadata, among them: with the 1 MiB
        metadata blocks of h5_layout that is the first growth of a file, about never
        later); the first chunk of every file and every `VERIFY_EVERY`-th are checked
        against the index too.
        """
        first = self._allocated
        count = length - first
        grow = self._grow
        before = self._allocated_to
        if before is None:
            before = grow.filesize()
        grow.set_length(length)
        after = grow.filesize()
        self._allocated_to = after
        self._allocated = length
        self._offsets.extend([-1] * count)
        self._state.extend(bytes([CHUNK_UNKNOWN]) * count)
        if self._direct is None:
            return  # state stays unknown: zeroed through HDF5 unless an image is written
        chunk_bytes = self._chunk_bytes
        stride = align_up(chunk_bytes)
        start = align_up(before)
        fresh = after == start + (count - 1) * stride + chunk_bytes
        offsets = self._offsets
        for index in range(first, length):
            offset = start + (index - first) * stride if fresh else None
            if offset is None or index % VERIFY_EVERY == 0:
                actual = self._chunk_offset_from_index(index)
                if offset is not None and actual != offset:
                    log.error("%s: chunk %d is at %s, not at %d as derived: O_DIRECT off for this file",
                              self.path, index, actual, offset)
                    self._direct_off()
                    return
                offset = actual
            offsets[index] = offset
        if fresh:
            self._state[first:length] = bytes([CHUNK_ZEROS]) * count

    def _trim(self) -> None:
        """Give `data` exactly the images written or recorded (`extent`): the chunks
        allocated ahead are dropped (SWMR-write mode never reuses their file space: it
        stays a hole that was never written, at most `MAX_BLOCK` - 1 chunks)."""
        if self._allocated <= self._extent:
            return
        self._hdf5_call()
        self._grow.set_length(self._extent)
        self._allocated = self._extent
        del self._offsets[self._extent :]
        del self._state[self._extent :]

    def _hdf5_call(self) -> None:
        """Note that this file is about to make an HDF5 call other than growing `data`
        (it may allocate file space: the next growth reads the end of allocation first)."""
        self._allocated_to = None

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
        if direct is not None and direct.write(self._offsets[index], chunk, address):
            self.direct_writes += 1
        else:
            self._allocated_to = None
            self._data_id.write_direct_chunk((index, 0, 0), chunk)
            self._behind.wrote(nbytes)
        if early:
            state[index] = CHUNK_IMAGE
        self.bytes_written += nbytes

    def write_chunks(self, indices: list[int], chunks: list[memoryview], addresses: list[int]) -> bool:
        """Store whole uncompressed image chunks at `indices` (ascending; `addresses`: each
        chunk's first byte in memory) with O_DIRECT, chunks that lie one after the other in
        the file in one gathered write: True once all are written. False if any cannot go
        that way (no O_DIRECT, unaligned, or a write or growth that failed: then some may be
        written, none is counted or marked as written, and the caller stores each one with
        `write_chunk`, which raises the error of the exact chunk that fails)."""
        if self._direct is None:
            return False
        stop = indices[-1] + 1
        try:
            if stop > self._extent:
                self._grow_to(stop)
            direct = self._direct
            if direct is None:  # turned off by the growth
                return False
            offsets = self._offsets
            state = self._state
            for index in indices:
                state[index] = CHUNK_UNKNOWN  # a write that fails part-way: zeroed at close
            chunk_bytes = self._chunk_bytes
            start = 0
            count = len(indices)
            for end in range(1, count + 1):
                if end < count and offsets[indices[end]] == offsets[indices[end - 1]] + chunk_bytes:
                    continue
                if not direct.write_run(offsets[indices[start]], chunks[start:end], addresses[start:end]):
                    return False
                start = end
        except OSError:
            return False
        for index in indices:
            state[index] = CHUNK_IMAGE
        self.direct_writes += count
        self.bytes_written += chunk_bytes * count
        return True

    def forget_chunks(self, indices: list[int]) -> None:
        """Chunks written by `write_chunks` whose images will not be recorded (the writer
        stopped before): their content counts as unknown again (zeroed at close)."""
        for index in indices:
            if self._state[index] == CHUNK_IMAGE:
                self._state[index] = CHUNK_UNKNOWN

    def clear_chunk(self, index: int) -> None:
        """Overwrite the chunk at `index` with zeros (the fill value) through the filters."""
        self._grow_to(index + 1)
        if self._early:
            self._zero(index)
            return
        self._hdf5_call()
        self._handles.data[index] = self._zero_image

    def _zero(self, index: int) -> None:
        """Early-allocated file: make chunk `index` read as zeros unless it is untouched new
        space (a hole punched, or zeros written through HDF5 once O_DIRECT is off)."""
        if self._state[index] == CHUNK_ZEROS:
            return
        if self._direct is not None and self._offsets[index] >= 0:
            self._direct.zero(self._offsets[index])
        else:
            self._hdf5_call()
            self._handles.data[index] = self._zero_image
        self._state[index] = CHUNK_ZEROS

    def record_written(
        self, index: int, image_id: int, status: int, detail: DetectorInfo | None
    ) -> None:
        """Record a written image: its metadata record and detector columns."""
        pending = self._pending
        if pending.full:
            self._write_records()
        single = self._single_column
        if single is not None:  # one column (pco: the timestamp): no list per image
            pending.add_single(index, image_id, status, 0 if detail is None else single(detail))
        else:
            values = None
            if detail is not None and self._columns:
                values = [value_of(detail) for value_of in self._columns]
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
        self._hdf5_call()
        handles = self._handles
        length = self._extent
        if self._records_length != length:  # straight through the dataset ids (h5py's
            handles.metadata.id.set_extent((length,))  # resize() costs more in Python)
            for column in handles.columns:
                column.id.set_extent((length,))
            self._records_length = length
        pending = self._pending
        if not pending.count:
            return
        for start, _stop, positions in pending.runs():
            _write_run(handles.metadata, start, pending.records[positions], self._record_type)
            for number, column in enumerate(handles.columns):
                _write_run(column, start, pending.values[number, positions], self._column_type)
        pending.clear()

    def flush(self) -> None:
        """Write the held records and flush, so that SWMR readers see everything so far
        (chunks allocated ahead are dropped first: `data` has exactly `extent` images)."""
        self._trim()
        self._write_records()
        self._hdf5_call()
        self._handles.file.flush()
        self._flush_wanted = False
        self.flushes += 1
        self.n_flushed = self.n_written

    def flush_when_aligned(self) -> bool:
        """Flush now if `data` holds no chunk allocated ahead (True), else at the next
        block boundary, right before `data` grows again (False): readers then see the
        file exactly as written without dropping allocated chunks."""
        if self._allocated == self._extent:
            self.flush()
            return True
        self._flush_wanted = True
        return False

    def set_block(self, images_per_second: float) -> None:
        """Size the next growths of an early-allocated `data` for this rate: a block lasts
        about BLOCK_SECONDS (1 to MAX_BLOCK chunks), so a flush waits at most that long
        for a block boundary."""
        self.block = max(1, min(MAX_BLOCK, int(images_per_second * BLOCK_SECONDS)))

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
            self._trim()
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
        state = np.frombuffer(self._state, np.int8, count=self._extent)
        for index in np.flatnonzero(state == CHUNK_UNKNOWN):
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
