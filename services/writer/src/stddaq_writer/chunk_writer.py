"""From a ring slot to a file chunk, never writing a wrong image.

Per image, by what the slot holds and what the file stores:

- raw slot, uncompressed file ("view" mode, the default): the chunk is written straight
  from the zero-copy slot view, then the seqlock is checked again. If the slot was
  overwritten during the write, the chunk just written may be torn: it is overwritten
  with zeros and the image recorded missing, so the file never holds a wrong image (its
  metadata record is only written later, so even a crash in between leaves status 0).
  "copy" mode copies the slot into a reusable buffer first (`read_into`, checked), then
  writes the copy; the benchmark compares both (bench/bench_writer.py).
- raw slot, bitshuffle_lz4 file: compressed from the slot view into a reusable buffer
  (the only copy), checked, then written as the chunk: compressed exactly once.
- pre-compressed slot (bitshuffle_lz4), bitshuffle_lz4 file: the slot bytes are the chunk
  (direct chunk write, checked afterwards like the raw view case).
- pre-compressed slot, uncompressed file: decompressed into a reusable buffer, checked,
  written.

An image that cannot be read (overwritten before the writer got to it, torn, or with
metadata that does not fit the file) is recorded with status 0 (missing) and counted.
"""

from __future__ import annotations

import logging
import mmap
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Protocol

import numpy as np

from stddaq_common.bus.metadata import Compression, ImageMeta, numpy_dtype
from stddaq_common.wire.compression import (
    bitshuffle_lz4_compress_into,
    bitshuffle_lz4_decompress_into,
    bitshuffle_lz4_header,
    bitshuffle_lz4_max_size,
)
from stddaq_common.wire.errors import WireFormatError
from stddaq_writer.image_file import ImageFile

log = logging.getLogger("stddaq.writer")

ReadMode = Literal["view", "copy"]
READ_MODES: tuple[ReadMode, ...] = ("view", "copy")


class SlotLike(Protocol):
    """What the writer uses of stddaq_common.ring.image_ring.SlotView."""

    data: memoryview
    nbytes: int
    address: int
    """Memory address of the first byte of `data`."""

    def array(self, dtype: Any, shape: tuple[int, ...]) -> Any:
        """The slot bytes as a numpy array (no copy)."""

    def still_valid(self) -> bool:
        """False if the slot was overwritten since the view was taken."""


class RingLike(Protocol):
    """What the writer uses of stddaq_common.ring.image_ring.ImageRing."""

    def view(self, image_id: int) -> Any:
        """A SlotLike of a complete image, or None."""

    def read_into(self, image_id: int, out: Any) -> int | None:
        """Copy a complete image into `out`; its size, or None."""


class Outcome(Enum):
    """What became of one image."""

    WRITTEN = "written"
    OVERWRITTEN = "overwritten"
    """The slot no longer held the image when the writer read it (too late)."""
    TORN = "torn"
    """The slot was overwritten while the writer used it."""
    REJECTED = "rejected"
    """The metadata does not fit the file (size, shape, type, compression)."""


@dataclass(slots=True)
class ImageCounts:
    """Per-outcome image counts of one file."""

    written: int = 0
    overwritten: int = 0
    torn: int = 0
    rejected: int = 0

    @property
    def missing(self) -> int:
        """Images recorded missing, whatever the reason."""
        return self.overwritten + self.torn + self.rejected


class _SlotProblem(Exception):
    """Slot content that does not fit its metadata (unless the slot was torn meanwhile)."""

    def __init__(self, slot: SlotLike, problem: str) -> None:
        super().__init__(problem)
        self.slot = slot


_NONE = Compression.NONE
_WRITTEN = Outcome.WRITTEN


class _Overwritten:
    """Stands for the slot of an image the ring no longer held (write_images)."""

    nbytes = 0
    data = memoryview(b"")
    address = 0

    def array(self, dtype: Any, shape: tuple[int, ...]) -> Any:
        """Never called."""
        raise AssertionError("no slot")

    def still_valid(self) -> bool:
        """Never called."""
        return False


_OVERWRITTEN: SlotLike = _Overwritten()


class ChunkWriter:
    """Writes images from one ring into one ImageFile, checking every slot."""

    def __init__(self, ring: RingLike, image_file: ImageFile, read_mode: ReadMode = "view") -> None:
        if read_mode not in READ_MODES:
            raise ValueError(f"unknown read mode {read_mode!r}, expected one of {READ_MODES}")
        spec = image_file.spec
        self._ring = ring
        self._file = image_file
        self._read_mode = read_mode
        self._shape = (spec.height, spec.width)
        self._dtype = spec.dtype
        self._image_bytes = spec.image_bytes
        self._compress = spec.compression == "bitshuffle_lz4"
        self._raw_buffer: np.ndarray[Any, Any] | None = None
        self._packed_buffer: np.ndarray[Any, Any] | None = None
        self.counts = ImageCounts()
        self._rejections_logged = 0
        self._fits: tuple[Any, ...] | None = None
        """The last metadata signature (height, width, dtype, compression, size) that
        passed `_check` (size only for uncompressed images): the next image with the same
        signature needs no further look."""
        self._view_mode = read_mode == "view"
        self.at_index = -1
        """The dataset position `write_images` was at when it last stopped (or raised)."""

    def _raw(self) -> np.ndarray[Any, Any]:
        if self._raw_buffer is None:  # page-aligned (an anonymous mmap): O_DIRECT can write it
            count = self._shape[0] * self._shape[1]
            memory = mmap.mmap(-1, max(count * self._dtype.itemsize, 1))
            self._raw_buffer = np.frombuffer(memory, self._dtype, count=count).reshape(self._shape)
        return self._raw_buffer

    def _packed(self) -> np.ndarray[Any, Any]:
        if self._packed_buffer is None:
            size = bitshuffle_lz4_max_size(self._shape[0] * self._shape[1], self._dtype.itemsize)
            self._packed_buffer = np.empty(size, np.uint8)
        return self._packed_buffer

    def write_image(self, index: int, meta: ImageMeta) -> Outcome:
        """Write image `meta.image_id` from the ring at dataset position `index`."""
        compression = meta.compression
        size = meta.size if compression == _NONE else -1
        signature = (meta.height, meta.width, meta.dtype, compression, size)
        if signature != self._fits:
            mismatch = self._check(meta)
            if mismatch is not None:
                return self._reject(index, meta, mismatch)
            self._fits = signature
        try:
            if compression == _NONE:
                if self._compress:
                    outcome = self._compress_raw(index, meta)
                elif self._view_mode:
                    outcome = self._write_view(index, meta, self._image_bytes)
                else:
                    outcome = self._write_copy(index, meta)
            elif self._compress:
                outcome = self._write_view(index, meta, meta.size)
            else:
                outcome = self._decompress(index, meta)
        except _SlotProblem as problem:
            if problem.slot.still_valid():
                return self._reject(index, meta, f"bad slot content: {problem}")
            outcome = Outcome.TORN
        if outcome is _WRITTEN:
            self._file.record_written(index, meta.image_id, int(meta.status), meta.detail)
            self.counts.written += 1
            return outcome
        return self._missing(index, meta, outcome)

    def write_images(self, first: int, metas: list[ImageMeta], missing: list[int]) -> None:
        """Write `metas[k]` at dataset position `first + k`, each as `write_image` would,
        appending the id of every image not written to `missing` (in position order);
        `at_index` is the position being written if this raises (OSError: the file cannot
        take it; the positions before it are done, none after it).

        Raw slots into an uncompressed file written with O_DIRECT ("view" mode) go out
        together: every slot is viewed first, all chunks are written (in one gathered
        write where their file places follow each other), then every slot is checked
        again; a slot overwritten meanwhile gets its chunk zeroed and is recorded torn,
        exactly as one image at a time.
        """
        file = self._file
        if not (self._view_mode and not self._compress and file.direct_io):
            for index, meta in enumerate(metas, first):
                self.at_index = index
                if self.write_image(index, meta) is not _WRITTEN:
                    missing.append(meta.image_id)
            return
        view = self._ring.view
        image_bytes = self._image_bytes
        fits = self._fits
        slots: list[SlotLike | None] = []
        """Per image: its slot view; None (not viewed) for an image written on its own."""
        indices: list[int] = []
        chunks: list[memoryview] = []
        addresses: list[int] = []
        for index, meta in enumerate(metas, first):
            compression = meta.compression
            if compression != _NONE or (
                (meta.height, meta.width, meta.dtype, compression, meta.size) != fits
            ):
                slots.append(None)  # anything but the usual image: as one image at a time
                continue
            slot = view(meta.image_id)
            slots.append(slot or _OVERWRITTEN)
            if slot is not None and slot.nbytes >= image_bytes:
                indices.append(index)
                chunks.append(slot.data if slot.nbytes == image_bytes else slot.data[:image_bytes])
                addresses.append(slot.address)
        together = bool(indices) and file.write_chunks(indices, chunks, addresses)
        counts = self.counts
        index = first
        try:
            for index, meta, slot in zip(range(first, first + len(metas)), metas, slots, strict=True):
                self.at_index = index
                if slot is None:
                    outcome = self.write_image(index, meta)
                elif slot is _OVERWRITTEN:
                    outcome = self._missing(index, meta, Outcome.OVERWRITTEN)
                elif slot.nbytes < image_bytes:
                    if slot.still_valid():
                        outcome = self._reject(index, meta, f"bad slot content: slot holds "
                                               f"{slot.nbytes} bytes, metadata says {image_bytes}")
                    else:
                        outcome = self._missing(index, meta, Outcome.TORN)
                else:
                    if not together:
                        chunk = slot.data if slot.nbytes == image_bytes else slot.data[:image_bytes]
                        file.write_chunk(index, chunk, slot.address)
                    if slot.still_valid():
                        file.record_written(index, meta.image_id, int(meta.status), meta.detail)
                        counts.written += 1
                        continue
                    file.clear_chunk(index)
                    outcome = self._missing(index, meta, Outcome.TORN)
                if outcome is not _WRITTEN:
                    missing.append(meta.image_id)
        except BaseException:
            if together:  # written together, not recorded: zeroed at close like any unknown chunk
                file.forget_chunks([later for later in indices if later > index])
            raise

    def _missing(self, index: int, meta: ImageMeta, outcome: Outcome) -> Outcome:
        """Record an image that did not reach the file (overwritten or torn)."""
        self._file.record_missing(index, meta.image_id)
        if outcome is Outcome.TORN:
            self.counts.torn += 1
        else:
            self.counts.overwritten += 1
        return outcome

    def _check(self, meta: ImageMeta) -> str | None:
        if (meta.height, meta.width) != self._shape:
            return f"image is {meta.height}x{meta.width}, the file holds {self._shape[0]}x{self._shape[1]}"
        try:
            dtype = numpy_dtype(meta.dtype)
        except ValueError:
            return f"image has pixel type {meta.dtype.name}"
        if dtype != self._dtype:
            return f"image pixels are {dtype}, the file holds {self._dtype}"
        if meta.compression == Compression.NONE:
            if meta.size != self._image_bytes:
                return f"image has {meta.size} bytes, {self._image_bytes} expected"
        elif meta.compression != Compression.H5BITSHUFFLE_LZ4:
            return f"image compression {meta.compression.name} cannot be written"
        return None

    def _reject(self, index: int, meta: ImageMeta, problem: str) -> Outcome:
        self.counts.rejected += 1
        if self._rejections_logged < 10:
            self._rejections_logged += 1
            log.warning("image %d recorded missing: %s", meta.image_id, problem)
        self._file.record_missing(index, meta.image_id)
        return Outcome.REJECTED

    def _write_view(self, index: int, meta: ImageMeta, nbytes: int) -> Outcome:
        slot = self._ring.view(meta.image_id)
        if slot is None:
            return Outcome.OVERWRITTEN
        if slot.nbytes < nbytes:
            raise _SlotProblem(slot, f"slot holds {slot.nbytes} bytes, metadata says {nbytes}")
        chunk = slot.data if slot.nbytes == nbytes else slot.data[:nbytes]
        if self._compress:
            try:
                unpacked, _ = bitshuffle_lz4_header(chunk)
            except WireFormatError as error:
                raise _SlotProblem(slot, str(error)) from None
            if unpacked != self._image_bytes:
                raise _SlotProblem(slot, f"chunk header says {unpacked} bytes")
        self._file.write_chunk(index, chunk, slot.address)
        if slot.still_valid():
            return _WRITTEN
        self._file.clear_chunk(index)
        return Outcome.TORN

    def _write_copy(self, index: int, meta: ImageMeta) -> Outcome:
        buffer = self._raw()
        nbytes = self._ring.read_into(meta.image_id, buffer)
        if nbytes is None:
            return Outcome.OVERWRITTEN
        self._file.write_chunk(index, buffer)
        return Outcome.WRITTEN

    def _compress_raw(self, index: int, meta: ImageMeta) -> Outcome:
        slot = self._ring.view(meta.image_id)
        if slot is None:
            return Outcome.OVERWRITTEN
        image = slot.array(self._dtype, self._shape)
        packed = self._packed()
        nbytes = bitshuffle_lz4_compress_into(image, packed)
        if not slot.still_valid():
            return Outcome.TORN
        self._file.write_chunk(index, packed[:nbytes])
        return Outcome.WRITTEN

    def _decompress(self, index: int, meta: ImageMeta) -> Outcome:
        slot = self._ring.view(meta.image_id)
        if slot is None:
            return Outcome.OVERWRITTEN
        buffer = self._raw()
        try:
            bitshuffle_lz4_decompress_into(
                slot.data[: meta.size], buffer, self._dtype, expected_nbytes=self._image_bytes
            )
        except WireFormatError as error:
            raise _SlotProblem(slot, str(error)) from None
        if not slot.still_valid():
            return Outcome.TORN
        self._file.write_chunk(index, buffer)
        return Outcome.WRITTEN
