"""Files a killed writer process left open, made readable by the next process.

A writer holds its file in SWMR-write mode; HDF5 marks that in the superblock's status
flags, and a process killed with SIGKILL never clears them: HDF5 then refuses to open the
file ("file is already open for write") until `h5clear -s`. So while a file is open the
writer keeps a note `<ipc_dir>/<detector>-writer-<k>.open` naming it; a new writer
process that finds the note (its predecessor died with the file open) clears the flags,
deletes the file's disk reserve (`.<name>.reserve`) and the note.

Clearing the flags is what `h5clear -s` does: zero the status-flags byte of a version 2
or 3 superblock and write its checksum again (Jenkins' lookup3, as HDF5 computes it).
The file then holds what the killed process had flushed (about once a second).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass

from stddaq_common.bus.driver_writer import writer_address
from stddaq_writer.disk_reserve import reserve_path

log = logging.getLogger("stddaq.writer")

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = 0xFFFFFFFF
_FLAGS_AT = 11
"""Offset of the status-flags byte in a version 2/3 superblock."""


def _rot(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 `hashlittle` of `data`: HDF5's metadata checksum."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    if length == 0:
        return c
    padded = data + bytes(-length % 12)
    blocks = len(padded) // 12
    for block in range(blocks):
        start = block * 12
        words = [int.from_bytes(padded[start + 4 * i : start + 4 * i + 4], "little") for i in range(3)]
        a = (a + words[0]) & _MASK
        b = (b + words[1]) & _MASK
        c = (c + words[2]) & _MASK
        if block == blocks - 1:
            break
        a = ((a - c) & _MASK) ^ _rot(c, 4)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 6)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 8)
        b = (b + a) & _MASK
        a = ((a - c) & _MASK) ^ _rot(c, 16)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 19)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 4)
        b = (b + a) & _MASK
    c = ((c ^ b) - _rot(b, 14)) & _MASK
    a = ((a ^ c) - _rot(c, 11)) & _MASK
    b = ((b ^ a) - _rot(a, 25)) & _MASK
    c = ((c ^ b) - _rot(b, 16)) & _MASK
    a = ((a ^ c) - _rot(c, 4)) & _MASK
    b = ((b ^ a) - _rot(a, 14)) & _MASK
    c = ((c ^ b) - _rot(b, 24)) & _MASK
    return c


def _superblock_at(fd: int) -> int | None:
    """Offset of the superblock (0, 512, 1024, ...: after a user block), None if none."""
    size = os.fstat(fd).st_size
    offset = 0
    while offset + len(SIGNATURE) <= size:
        if os.pread(fd, len(SIGNATURE), offset) == SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def clear_status_flags(path: str) -> bool:
    """Zero the superblock status flags of the HDF5 file at `path` (as `h5clear -s`);
    True if they were set. Files with a version 0/1 superblock are left as they are.
    Raises OSError or ValueError (not an HDF5 file, bad checksum)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        at = _superblock_at(fd)
        if at is None:
            raise ValueError(f"{path}: no HDF5 superblock")
        head = os.pread(fd, 10, at)
        version, offset_size = head[8], head[9]
        if version not in (2, 3):
            return False
        body_size = 12 + 4 * offset_size
        block = bytearray(os.pread(fd, body_size + 4, at))
        if len(block) != body_size + 4:
            raise ValueError(f"{path}: superblock cut short")
        stored = int.from_bytes(block[body_size:], "little")
        if lookup3(bytes(block[:body_size])) != stored:
            raise ValueError(f"{path}: superblock checksum does not match")
        if block[_FLAGS_AT] == 0:
            return False
        block[_FLAGS_AT] = 0
        block[body_size:] = lookup3(bytes(block[:body_size])).to_bytes(4, "little")
        os.pwrite(fd, bytes(block), at)
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


@dataclass(frozen=True)
class OpenFileNote:
    """The note of the file writer `index` holds open: `<ipc_dir>/<detector>-writer-<k>.open`."""

    path: str

    @classmethod
    def of(cls, ipc_dir: str, detector_name: str, index: int) -> OpenFileNote:
        """The note of writer `index` of `detector_name`."""
        socket_file = writer_address(detector_name, index, ipc_dir).removeprefix("ipc://")
        return cls(f"{socket_file}.open")

    def write(self, file: str, acq_id: int) -> None:
        """Record that `file` (of acquisition `acq_id`) is open now."""
        temp = f"{self.path}.tmp"
        try:
            with open(temp, "w", encoding="utf-8") as out:
                json.dump({"file": file, "acq_id": acq_id}, out)
            os.replace(temp, self.path)
        except OSError as error:
            log.warning("cannot write the note of the open file %s: %s", self.path, error)

    def clear(self) -> None:
        """The file was closed: no note."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def repair_left_file(self) -> str | None:
        """If a previous process left a file open: clear its flags, delete its reserve and
        the note; the file's path (None without a note). Never raises."""
        try:
            with open(self.path, encoding="utf-8") as note:
                left = json.load(note)
            file = str(left["file"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.error("unreadable note of an open file %s (%s): removed", self.path, error)
            self.clear()
            return None
        try:
            cleared = clear_status_flags(file)
            log.warning(
                "acquisition %s: the previous writer process died with %s open; %s",
                left.get("acq_id"),
                file,
                "cleared its open-for-write flags (it opens without h5clear)"
                if cleared
                else "its flags were clear",
            )
        except FileNotFoundError:
            log.warning("the previous writer process died with %s open; it is gone", file)
        except (OSError, ValueError) as error:
            log.error("cannot repair %s, left open by the previous writer process: %s", file, error)
        with contextlib.suppress(OSError):
            os.unlink(reserve_path(file))
        self.clear()
        return file
