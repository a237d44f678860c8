"""Layout of a ring's companion segment `/dev/shm/<name>.stddaq`, and the ring errors.

The companion segment is an array of little-endian uint64 words:

- a header page (`HEADER_BYTES`): magic, layout version, geometry, owner pid, creation time,
  state, the identity (st_dev, st_ino) of the data segment it describes, and the id of the
  last completed write;
- then one 64-byte line per slot (`SLOT_WORDS` words, one cache line so that the writer and
  readers of neighbouring slots do not share a line): sequence, image_id, nbytes.

The sequence word is a seqlock: 0 = never written, odd = being written, even = complete.
The data segment `/dev/shm/<name>` itself is laid out exactly as std_daq's.
"""

from __future__ import annotations

from dataclasses import dataclass

from stddaq_common.ring.geometry import RingGeometry

MAGIC = int.from_bytes(b"STDDAQRB", "little")
"""First header word: marks a stddaq ring companion segment."""

LAYOUT_VERSION = 1
"""Bumped whenever the companion layout changes incompatibly."""

COMPANION_SUFFIX = ".stddaq"
"""The companion of `/dev/shm/<name>` is `/dev/shm/<name>.stddaq`."""

HEADER_BYTES = 4096
"""The header occupies the first page; slot lines follow it."""

SLOT_WORDS = 8
"""uint64 words per slot line (64 bytes)."""

# Header word indices.
W_MAGIC = 0
W_VERSION = 1
W_SLOT_BYTES = 2
W_N_SLOTS = 3
W_TOTAL_BYTES = 4
W_OWNER_PID = 5
W_CREATED_NS = 6
W_STATE = 7
W_DATA_DEV = 8
W_DATA_INO = 9
W_LAST_ID = 10
HEADER_WORDS_USED = 11

# Slot word offsets inside a slot line.
S_SEQ = 0
S_IMAGE_ID = 1
S_NBYTES = 2

# Header states.
STATE_ACTIVE = 1
"""An owner created the ring (it may have crashed since: the flock tells)."""
STATE_CLOSED = 2
"""The owner closed the ring and unlinked both segments."""
STATE_RETIRED = 3
"""A new owner replaced this companion (and its data segment) with new ones."""

STATE_NAMES = {STATE_ACTIVE: "active", STATE_CLOSED: "closed", STATE_RETIRED: "retired"}

MAX_IMAGE_ID = 2**64 - 1
"""Image ids are protobuf uint64."""


class RingError(Exception):
    """A ring that cannot be created or attached, with a message naming the segment."""


class RingOwnerExists(RingError):
    """create() found the ring held by a live owner."""


def companion_bytes(n_slots: int) -> int:
    """Size of the companion segment of a ring with `n_slots` slots."""
    return HEADER_BYTES + n_slots * SLOT_WORDS * 8


@dataclass(frozen=True, slots=True)
class RingHeader:
    """The decoded header words of a companion segment."""

    version: int
    geometry: RingGeometry
    total_bytes: int
    owner_pid: int
    created_ns: int
    state: int
    data_dev: int
    data_ino: int

    @property
    def state_name(self) -> str:
        """Human-readable state for messages."""
        return STATE_NAMES.get(self.state, f"unknown state {self.state}")


def decode_header(raw: bytes) -> RingHeader | None:
    """Decode the header page, or None if it is too short or lacks the magic."""
    if len(raw) < HEADER_WORDS_USED * 8:
        return None
    words = memoryview(raw)[: HEADER_WORDS_USED * 8].cast("Q")
    if words[W_MAGIC] != MAGIC:
        return None
    return RingHeader(
        version=words[W_VERSION],
        geometry=RingGeometry(slot_bytes=words[W_SLOT_BYTES], n_slots=words[W_N_SLOTS]),
        total_bytes=words[W_TOTAL_BYTES],
        owner_pid=words[W_OWNER_PID],
        created_ns=words[W_CREATED_NS],
        state=words[W_STATE],
        data_dev=words[W_DATA_DEV],
        data_ino=words[W_DATA_INO],
    )


def owner_pid_of(raw: bytes) -> int | None:
    """The owner pid word of a (possibly still incomplete) header, or None if absent."""
    if len(raw) < (W_OWNER_PID + 1) * 8:
        return None
    pid = int.from_bytes(raw[W_OWNER_PID * 8 : W_OWNER_PID * 8 + 8], "little")
    return pid or None


def init_header(
    words: memoryview,
    geometry: RingGeometry,
    *,
    owner_pid: int,
    created_ns: int,
    data_dev: int,
    data_ino: int,
) -> None:
    """Fill a fresh (zeroed) companion's header; the magic is stored last."""
    words[W_VERSION] = LAYOUT_VERSION
    words[W_SLOT_BYTES] = geometry.slot_bytes
    words[W_N_SLOTS] = geometry.n_slots
    words[W_TOTAL_BYTES] = geometry.total_bytes
    words[W_OWNER_PID] = owner_pid
    words[W_CREATED_NS] = created_ns
    words[W_STATE] = STATE_ACTIVE
    words[W_DATA_DEV] = data_dev
    words[W_DATA_INO] = data_ino
    words[W_LAST_ID] = 0
    words[W_MAGIC] = MAGIC


def describe_geometry(geometry: RingGeometry) -> str:
    """`slot_bytes=..., n_slots=...` for error messages."""
    return f"slot_bytes={geometry.slot_bytes}, n_slots={geometry.n_slots}"
