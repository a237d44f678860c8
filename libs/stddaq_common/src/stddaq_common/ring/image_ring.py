"""The shared-memory image ring: std_daq's slot layout plus a seqlock per slot.

Data segment `/dev/shm/<name>`: image `id` at byte offset (id % n_slots) x slot_bytes,
exactly as std_daq lays it out. Companion segment `/dev/shm/<name>.stddaq`: header and
per-slot words (see `ring_layout`). One writer process (the owner) per ring:

    writer: seq -> odd, image_id, copy data, nbytes, seq -> even
    reader: seq (even, non-zero), image_id (== wanted), use data, seq again (unchanged?)

Within the owner, several threads may write different slots at the same time
(`start_write` hands out a `SlotWrite` token that `finish_write` takes back); a slot
never has two writes in progress (the second `start_write` raises `SlotBusy`), so every
slot's seqlock still has a single writer.

Aligned 8-byte loads and stores are atomic on x86-64, and x86 keeps stores in order and
loads in order, so a reader whose two seq reads agree saw a complete, unchanged image.
A read that comes too late or is torn returns None and is counted; no torn image is ever
handed out.

Size watch: before every write and every read the data segment's size is checked (one
`lseek` to the end of the open fd, under 1 us); if another program resized it (std_daq's services
`ftruncate` it to their own figure), the ring stops touching it for good: writes raise
`RingResized`, reads return None (counted as `resized_reads`), and one error is logged.
Touching pages that a shrink removed would kill the process with SIGBUS. (Only a resize
in the microseconds between the check and the copy cannot be caught.)

A ring that std_daq made has no companion (`verified` is False): images are read in place
as std_daq's readers read them, by slot only; nothing can prove that an image was not
overwritten while it was read. Such reads are counted (`unverified_reads`) and the
attach is logged as a warning; `still_valid()` cannot tell and returns True.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import threading
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import numpy as np
import numpy.typing as npt

from stddaq_common.names import IMAGE_SUFFIX, shm_name
from stddaq_common.ring.geometry import RingGeometry, ram_buffer_warning, ring_geometry
from stddaq_common.ring.layout import (
    HEADER_BYTES,
    MAX_IMAGE_ID,
    S_IMAGE_ID,
    S_NBYTES,
    SLOT_WORDS,
    STATE_CLOSED,
    W_LAST_ID,
    W_OWNER_PID,
    W_STATE,
    RingError,
    RingOwnerExists,
    companion_bytes,
)
from stddaq_common.ring.segments import (
    DEFAULT_MODE,
    DEFAULT_SHM_DIR,
    Segments,
    attach_segments,
    create_segments,
    file_id,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

    from stddaq_common.config.model import DaqConfig

    ImageSource: TypeAlias = ReadableBuffer | npt.NDArray[Any]
    """Anything with the buffer protocol: bytes, bytearray, memoryview, numpy array."""
    ImageTarget: TypeAlias = WriteableBuffer | npt.NDArray[Any]
    """A writable buffer: bytearray, writable memoryview, numpy array."""

__all__ = ["ImageRing", "RingError", "RingOwnerExists", "RingResized", "SlotBusy", "SlotView", "SlotWrite"]

log = logging.getLogger(__name__)

_TSO_MACHINES = ("x86_64", "AMD64", "i686")
"""CPUs that keep stores in order and loads in order (what the seqlock needs)."""


class SlotView:
    """A zero-copy, read-only view of one complete image in the ring.

    Use `data` (or `array()`), then call `still_valid()`: False means the writer started
    overwriting the slot meanwhile and whatever was read must be discarded.
    """

    __slots__ = (
        "_counted", "_ring", "_seq", "_seq_index", "_words", "address", "data", "image_id", "nbytes"
    )

    def __init__(
        self, ring: ImageRing, seq_index: int, seq: int, image_id: int, data: memoryview, address: int
    ) -> None:
        self._ring = ring
        self._words = ring._slot_words
        self._seq_index = seq_index
        self._seq = seq
        self._counted = False
        self.image_id = image_id
        self.data = data
        """Read-only bytes of the image (nbytes long)."""
        self.nbytes = len(data)
        self.address = address
        """Memory address of the image's first byte (for O_DIRECT's alignment check)."""

    def array(self, dtype: npt.DTypeLike, shape: tuple[int, ...]) -> npt.NDArray[Any]:
        """The image as a read-only numpy array (no copy); shape must match nbytes."""
        dt = np.dtype(dtype)
        needed = math.prod(shape) * dt.itemsize
        if needed != self.nbytes:
            raise ValueError(
                f"image {self.image_id} has {self.nbytes} bytes; shape {shape} of {dt} needs {needed}"
            )
        return np.frombuffer(self.data, dtype=dt).reshape(shape)

    def still_valid(self) -> bool:
        """True if the slot still holds this exact image (call after using the data)."""
        if self._words[self._seq_index] == self._seq:
            return True
        if not self._counted:
            self._counted = True
            self._ring._torn_reads += 1
        return False

    def __repr__(self) -> str:
        return f"SlotView(image_id={self.image_id}, nbytes={self.nbytes})"


class UnverifiedSlotView(SlotView):
    """A view into a ring without a companion (std_daq's): no sequence to check."""

    __slots__ = ()

    def still_valid(self) -> bool:
        """Always True: a ring without a companion cannot tell (see `ImageRing.verified`)."""
        return True


class RingResized(RingError):
    """The data segment changed size under this process: the ring is no longer used."""


class SlotBusy(RingError):
    """start_write() on a slot that another write in progress holds."""


class SlotWrite:
    """A write in progress (from `ImageRing.start_write`): fill `data`, then hand it back to
    `finish_write` (or `abandon_write`). Any thread of the owner may fill and finish it."""

    __slots__ = ("_index", "_seq", "_slot", "data", "image_id")

    def __init__(self, image_id: int, slot: int, index: int, seq: int, data: memoryview) -> None:
        self.image_id = image_id
        self.data = data
        """Writable view of the whole slot (slot_bytes long)."""
        self._slot = slot
        self._index = index
        self._seq = seq

    def __repr__(self) -> str:
        return f"SlotWrite(image_id={self.image_id}, slot={self._slot})"


class ImageRing:
    """One shared-memory image ring: created by its owner (the single writer process),
    attached read-only by any number of reader processes."""

    def __init__(self, segments: Segments) -> None:
        """Wrap mapped segments; use `create()`, `attach()` or `for_config()` instead."""
        if platform.machine() not in _TSO_MACHINES:
            log.warning(
                "ring %r: the slot seqlock relies on x86-64 memory ordering; on %s a torn "
                "read might go undetected",
                segments.name,
                platform.machine(),
            )
        self._segments = segments
        self.name = segments.name
        self.geometry = segments.geometry
        self.is_owner = segments.lock_fd is not None
        self.verified = segments.companion_map is not None
        """False for a ring another program (std_daq) made: reads cannot be proven untorn."""
        self._n_slots = segments.geometry.n_slots
        self._slot_bytes = segments.geometry.slot_bytes
        self._data_fd = segments.data_fd
        self._expected_size = segments.geometry.total_bytes
        self._resized_to: int | None = None
        data = memoryview(segments.data_map)
        self._data = data
        self._data_address = int(np.frombuffer(segments.data_map, np.uint8).ctypes.data)
        """Address of the data segment's first byte (slot addresses are offsets from it)."""
        self._data_ro = data.toreadonly() if self.is_owner else data
        # A ring without a companion gets private zeroed words: every slot reads as
        # "never written" for the verified paths, which it never takes.
        companion_map = segments.companion_map
        companion = memoryview(companion_map if companion_map is not None else bytearray(HEADER_BYTES))
        self._companion = companion
        self._header_words = companion[:HEADER_BYTES].cast("Q")
        self._slot_words = (
            companion[HEADER_BYTES : companion_bytes(self._n_slots)].cast("Q")
            if companion_map is not None
            else memoryview(bytearray(8)).cast("Q")
        )
        self._pending: SlotWrite | None = None
        """The write begun by the single-write API (begin_write/write), if any."""
        self._in_progress: dict[int, SlotWrite] = {}
        """Writes in progress by slot."""
        self._write_lock = threading.Lock()
        self._writes = 0
        self._reads = 0
        self._torn_reads = 0
        self._overwritten = 0
        self._not_written = 0
        self._unverified_reads = 0
        self._resized_reads = 0
        self._closed = False
        if not self.verified:
            log.warning(
                "ring %r: %s has no stddaq companion (a std_daq service made it): reading it as "
                "std_daq's readers do; this ring cannot prove that an image was not overwritten "
                "while it was read (counted as unverified_reads)",
                self.name,
                segments.data_path,
            )

    # ----------------------------------------------------------------- construction

    @classmethod
    def create(
        cls,
        name: str,
        geometry: RingGeometry,
        *,
        shm_dir: str = DEFAULT_SHM_DIR,
        mode: int = DEFAULT_MODE,
    ) -> ImageRing:
        """Create (pre-faulted) as owner; RingOwnerExists if a live owner holds it.

        If the previous owner died, takes over with a log warning (its segments are kept
        in place when the geometry matches, so its readers stay attached).
        """
        return cls(create_segments(name, geometry, shm_dir, mode))

    @classmethod
    def attach(
        cls,
        name: str,
        geometry: RingGeometry | None = None,
        *,
        shm_dir: str = DEFAULT_SHM_DIR,
        timeout: float = 0.0,
        foreign: bool = False,
    ) -> ImageRing:
        """Attach read-only, waiting up to `timeout` s for the owner to create the ring.

        Raises RingError (saying why) if it is missing, not a stddaq ring, its geometry
        differs from `geometry`, or its data segment has another size. `foreign`: also
        attach a data segment without a stddaq companion (std_daq's; `verified` is then
        False). An attacher never unlinks anything.
        """
        return cls(attach_segments(name, geometry, shm_dir, timeout, foreign=foreign))

    @classmethod
    def for_config(
        cls,
        config: DaqConfig,
        *,
        create: bool,
        suffix: str = IMAGE_SUFFIX,
        timeout: float = 0.0,
        shm_dir: str = DEFAULT_SHM_DIR,
        foreign: bool = False,
    ) -> ImageRing:
        """The `<detector>-<suffix>` ring of this config (created, or attached; `foreign`
        as in `attach`)."""
        name = shm_name(config.detector_name, suffix)
        geometry = ring_geometry(config)
        if create:
            warning = ram_buffer_warning(config)
            if warning is not None:  # the owner says it once; readers compute the same size
                log.warning("ring %r: %s", name, warning)
            return cls.create(name, geometry, shm_dir=shm_dir)
        return cls.attach(name, geometry, shm_dir=shm_dir, timeout=timeout, foreign=foreign)

    # ----------------------------------------------------------------- writer side

    def write(self, image_id: int, data: ImageSource) -> None:
        """Copy `data` (at most slot_bytes, any buffer) into the image's slot."""
        src = data if type(data) is memoryview else memoryview(cast("ReadableBuffer", data))
        if src.ndim != 1 or src.format != "B" or not src.c_contiguous:
            try:
                src = src.cast("B")  # needs a C-contiguous buffer of a simple format
            except (TypeError, ValueError):
                self._write_strided(image_id, np.asarray(data))
                return
        nbytes = src.nbytes
        if nbytes > self._slot_bytes:
            raise self._too_big(image_id, nbytes)
        token = self._begin_single(image_id)
        token.data[:nbytes] = src
        self._end_single(image_id, nbytes)

    def begin_write(self, image_id: int) -> memoryview:
        """Mark the image's slot as being written; return a writable view of the whole slot.

        The single-write API: a later begin_write (or write) leaves an unfinished one
        abandoned (its slot stays "being written", so readers never get it).
        """
        return self._begin_single(image_id).data

    def end_write(self, image_id: int, nbytes: int) -> None:
        """Mark the slot begun with `begin_write(image_id)` complete, holding `nbytes`."""
        self._end_single(image_id, nbytes)

    def start_write(self, image_id: int) -> SlotWrite:
        """Begin writing the image's slot; the token's `data` is the writable slot.

        Several writes (of different slots) may be in progress at once, from any threads;
        SlotBusy if this slot's previous write has not been finished or abandoned.
        """
        if not self.is_owner:
            raise RingError(f"ring {self.name!r} is attached read-only: only its owner writes")
        if not self.check_size():
            raise RingResized(self._resized_message())
        if not 0 <= image_id <= MAX_IMAGE_ID:
            raise ValueError(f"image id {image_id} is outside 0..2**64-1")
        slot = image_id % self._n_slots
        index = slot * SLOT_WORDS
        words = self._slot_words
        with self._write_lock:
            busy = self._in_progress.get(slot)
            if busy is not None:
                raise SlotBusy(
                    f"ring {self.name!r}: slot {slot} is still being written with image "
                    f"{busy.image_id}; cannot start image {image_id}"
                )
            seq = words[index]
            seq += 2 if seq & 1 else 1  # odd; an abandoned write left it odd already
            words[index] = seq
            words[index + S_IMAGE_ID] = image_id
            offset = slot * self._slot_bytes
            token = SlotWrite(image_id, slot, index, seq, self._data[offset : offset + self._slot_bytes])
            self._in_progress[slot] = token
        return token

    def finish_write(self, write: SlotWrite, nbytes: int) -> None:
        """Mark the token's slot complete, holding `nbytes` (readers may now get it)."""
        if not 0 <= nbytes <= self._slot_bytes:
            raise self._too_big(write.image_id, nbytes)
        words = self._slot_words
        index = write._index
        with self._write_lock:
            if self._in_progress.get(write._slot) is not write:
                raise RingError(f"ring {self.name!r}: write of image {write.image_id} is not in progress")
            words[index + S_NBYTES] = nbytes
            words[index] = write._seq + 1
            self._header_words[W_LAST_ID] = write.image_id
            del self._in_progress[write._slot]
            self._writes += 1

    def abandon_write(self, write: SlotWrite) -> None:
        """Give up a write in progress: its slot stays "being written" (never handed out)
        until the next write of that slot. Does nothing if the write is not in progress."""
        with self._write_lock:
            if self._in_progress.get(write._slot) is write:
                del self._in_progress[write._slot]

    @property
    def writes_in_progress(self) -> int:
        """Number of writes started and neither finished nor abandoned."""
        return len(self._in_progress)

    def _begin_single(self, image_id: int) -> SlotWrite:
        """start_write for the single-write API (abandoning its unfinished previous write)."""
        if self._pending is not None:
            self.abandon_write(self._pending)
            self._pending = None
        token = self.start_write(image_id)
        self._pending = token
        return token

    def _end_single(self, image_id: int, nbytes: int) -> None:
        token = self._pending
        if token is None or token.image_id != image_id:
            begun = None if token is None else token.image_id
            raise RingError(f"ring {self.name!r}: end_write({image_id}) does not match begin_write({begun})")
        self.finish_write(token, nbytes)
        self._pending = None

    def _write_strided(self, image_id: int, array: npt.NDArray[Any]) -> None:
        """write() of a non-contiguous array: numpy copies it straight into the slot."""
        nbytes = array.nbytes
        if nbytes > self._slot_bytes:
            raise self._too_big(image_id, nbytes)
        token = self._begin_single(image_id)
        target = np.frombuffer(token.data, array.dtype, array.size)
        np.copyto(target.reshape(array.shape), array)
        del target
        self._end_single(image_id, nbytes)

    def _too_big(self, image_id: int, nbytes: int) -> ValueError:
        return ValueError(
            f"ring {self.name!r}: image {image_id} has {nbytes} bytes; a slot holds 0..{self._slot_bytes}"
        )

    # ----------------------------------------------------------------- reader side

    def view(self, image_id: int, nbytes: int | None = None) -> SlotView | None:
        """Zero-copy view of a complete image, or None (overwritten or not written; counted).

        `nbytes`: the image's size from its metadata; used only by a ring without a
        companion (default: the whole slot), a stddaq ring knows each image's size.
        """
        if not self.check_size():
            self._resized_reads += 1
            return None
        if not self.verified:
            return self._view_unverified(image_id, nbytes)
        slot = image_id % self._n_slots
        index = slot * SLOT_WORDS
        words = self._slot_words
        seq = words[index]
        stored = words[index + S_IMAGE_ID]
        if seq & 1 or not seq or stored != image_id:
            self._count_miss(image_id, seq, stored)
            return None
        nbytes = words[index + S_NBYTES]
        offset = slot * self._slot_bytes
        self._reads += 1
        return SlotView(
            self, index, seq, image_id, self._data_ro[offset : offset + nbytes], self._data_address + offset
        )

    def read_into(self, image_id: int, out: ImageTarget, nbytes: int | None = None) -> int | None:
        """Copy a complete image into `out`; its byte count, or None if overwritten/torn.

        `nbytes` as in `view`."""
        if not self.check_size():
            self._resized_reads += 1
            return None
        if not self.verified:
            view = self._view_unverified(image_id, nbytes)
            return _copy_view(self.name, view, out)
        slot = image_id % self._n_slots
        index = slot * SLOT_WORDS
        words = self._slot_words
        seq = words[index]
        stored = words[index + S_IMAGE_ID]
        if seq & 1 or not seq or stored != image_id:
            self._count_miss(image_id, seq, stored)
            return None
        nbytes = words[index + S_NBYTES]
        dst = out if type(out) is memoryview else memoryview(cast("WriteableBuffer", out))
        if dst.ndim != 1 or dst.format != "B" or not dst.c_contiguous:
            dst = _writable_bytes(dst)
        if nbytes > dst.nbytes:
            raise ValueError(
                f"ring {self.name!r}: image {image_id} has {nbytes} bytes, out holds {dst.nbytes}"
            )
        offset = slot * self._slot_bytes
        dst[:nbytes] = self._data_ro[offset : offset + nbytes]
        if words[index] != seq:
            self._torn_reads += 1
            return None
        self._reads += 1
        return nbytes

    def _view_unverified(self, image_id: int, nbytes: int | None) -> SlotView:
        """The slot of `image_id` in a ring without a companion, as std_daq reads it."""
        if not 0 <= image_id <= MAX_IMAGE_ID:
            raise ValueError(f"image id {image_id} is outside 0..2**64-1")
        size = self._slot_bytes if nbytes is None else nbytes
        if not 0 <= size <= self._slot_bytes:
            raise self._too_big(image_id, size)
        offset = (image_id % self._n_slots) * self._slot_bytes
        self._reads += 1
        self._unverified_reads += 1
        return UnverifiedSlotView(
            self, 0, 0, image_id, self._data_ro[offset : offset + size], self._data_address + offset
        )

    def check_size(self) -> bool:
        """True while the data segment has the size this ring mapped; False (for good,
        after one logged error) once another program resized it. One lseek: cheap."""
        if self._resized_to is not None:
            return False
        try:  # the segment's size: lseek to its end (cheaper than fstat, the same answer)
            size = os.lseek(self._data_fd, 0, os.SEEK_END)
        except OSError:
            size = -1
        if size == self._expected_size:
            return True
        self._resized_to = size
        log.error("%s", self._resized_message())
        return False

    @property
    def resized(self) -> bool:
        """True once the data segment was found resized (the ring is no longer touched)."""
        return self._resized_to is not None

    def _resized_message(self) -> str:
        return (
            f"ring {self.name!r}: {self._segments.data_path} changed size under this process from "
            f"{self._expected_size} to {self._resized_to} bytes (another program, such as a std_daq "
            "service with another config, resized it); no longer reading or writing it"
        )

    def _count_miss(self, image_id: int, seq: int, stored: int) -> None:
        """Count a read of an id the slot does not hold complete."""
        if not 0 <= image_id <= MAX_IMAGE_ID:
            raise ValueError(f"image id {image_id} is outside 0..2**64-1")
        if seq and (stored > image_id or (stored == image_id and image_id <= self._header_words[W_LAST_ID])):
            self._overwritten += 1
        else:
            self._not_written += 1

    # ----------------------------------------------------------------- state

    @property
    def counters(self) -> dict[str, int]:
        """This process's counts: writes, reads, torn_reads, overwritten, not_written,
        unverified_reads (ring without companion), resized_reads (refused after a resize)."""
        return {
            "writes": self._writes,
            "reads": self._reads,
            "torn_reads": self._torn_reads,
            "overwritten": self._overwritten,
            "not_written": self._not_written,
            "unverified_reads": self._unverified_reads,
            "resized_reads": self._resized_reads,
        }

    @property
    def companion_path(self) -> str:
        """Path of the companion segment (which a ring made by std_daq lacks)."""
        return self._segments.companion_path

    @property
    def owner_pid(self) -> int:
        """The pid the owner recorded in the header."""
        return int(self._header_words[W_OWNER_PID])

    @property
    def last_written_id(self) -> int:
        """The id of the most recent completed write (0 before the first)."""
        return int(self._header_words[W_LAST_ID])

    def name_exists(self) -> bool:
        """True while both /dev/shm names still refer to this ring's segments.

        False when something unlinked or replaced them (std_daq's readers unlink the name
        when they exit); the mapping itself stays valid.
        """
        seg = self._segments
        if seg.companion_id is None:
            return file_id(seg.data_path) == seg.data_id
        return file_id(seg.data_path) == seg.data_id and (file_id(seg.companion_path) == seg.companion_id)

    def close(self) -> None:
        """Unmap; the owner also marks the ring closed and unlinks both segments."""
        if self._closed:
            return
        self._closed = True
        seg = self._segments
        if self.is_owner:
            self._header_words[W_STATE] = STATE_CLOSED
            names = [(seg.companion_path, seg.companion_id)]
            if self._resized_to is None:  # a resized data segment is someone else's now
                names.insert(0, (seg.data_path, seg.data_id))
            for path, ident in names:
                if file_id(path) == ident:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
        for view in (self._header_words, self._slot_words, self._data_ro, self._data, self._companion):
            with contextlib.suppress(BufferError):  # a numpy array still uses it: GC unmaps
                view.release()
        for mapping in (seg.data_map, seg.companion_map):
            if mapping is None:
                continue
            try:
                mapping.close()
            except BufferError:
                log.debug("ring %r: views still in use; unmapped when they are dropped", self.name)
        if seg.lock_fd is not None:
            os.close(seg.lock_fd)
            seg.lock_fd = None
        if seg.data_fd >= 0:
            os.close(seg.data_fd)
            seg.data_fd = -1

    def __enter__(self) -> ImageRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "owner" if self.is_owner else "attached"
        return f"ImageRing({self.name!r}, slot_bytes={self._slot_bytes}, n_slots={self._n_slots}, {role})"


def _copy_view(name: str, view: SlotView, out: ImageTarget) -> int:
    """Copy a view's bytes into `out`; their count."""
    dst = out if type(out) is memoryview else memoryview(cast("WriteableBuffer", out))
    if dst.ndim != 1 or dst.format != "B" or not dst.c_contiguous:
        dst = _writable_bytes(dst)
    if view.nbytes > dst.nbytes:
        raise ValueError(
            f"ring {name!r}: image {view.image_id} has {view.nbytes} bytes, out holds {dst.nbytes}"
        )
    dst[: view.nbytes] = view.data
    return view.nbytes


def _writable_bytes(view: memoryview) -> memoryview:
    """`view` as a writable, contiguous 1-D byte view, or a clear ValueError."""
    if view.readonly:
        raise ValueError("read_into: out must be a writable buffer")
    if not view.c_contiguous:
        raise ValueError("read_into: out must be a C-contiguous buffer")
    return view.cast("B")
