"""Creating, taking over and attaching the two /dev/shm segments of a ring.

The owner holds an exclusive `flock` on the companion segment for its whole life; the
kernel drops it when the owner dies, so a lock that can be taken means the previous
owner is gone. New segments are built under a temporary name and renamed into place,
so an attacher never sees a half-initialised ring. The data segment is allocated
(`posix_fallocate`: a full /dev/shm is a clear error now, not a SIGBUS later) and mapped
with `MAP_POPULATE`, so no page faults happen on the hot path. The companion is renamed
into place before the data segment, so a data segment without a companion is never one
that stddaq is still creating.

Sizes: every participant computes the same total size from the same config; std_daq's
services `ftruncate` the segment to their own figure. A data segment of another size
(another program uses it with another config) is refused with a RingError naming both
sizes and never mapped or resized. The data segment's fd stays open for the life of the
mapping, so the holder can `fstat` it to notice a size change under it (ImageRing does).

A ring that std_daq made has no companion: `attach_segments(..., foreign=True)` maps such
a data segment read-only as std_daq's readers do (same size rule), without the companion's
guarantees (Segments.companion_map is None).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import stat
import time
import uuid
from dataclasses import dataclass

from stddaq_common.ring.geometry import RingGeometry
from stddaq_common.ring.layout import (
    COMPANION_SUFFIX,
    HEADER_BYTES,
    LAYOUT_VERSION,
    STATE_ACTIVE,
    STATE_RETIRED,
    W_CREATED_NS,
    W_OWNER_PID,
    W_STATE,
    RingError,
    RingHeader,
    RingOwnerExists,
    companion_bytes,
    decode_header,
    describe_geometry,
    init_header,
    owner_pid_of,
)

log = logging.getLogger(__name__)

DEFAULT_SHM_DIR = "/dev/shm"
DEFAULT_MODE = 0o664
"""Segment permissions: readers of any user may map read-only; only the owner's group writes."""

ATTACH_POLL_S = 0.02
"""How often attach() looks again for a ring that is not there yet."""

_LOCK_ATTEMPTS = 50

FileId = tuple[int, int]
"""(st_dev, st_ino): which file a path names right now."""


@dataclass(slots=True)
class Segments:
    """The mapped segments of one ring, as created or attached."""

    name: str
    geometry: RingGeometry
    data_path: str
    companion_path: str
    data_map: mmap.mmap
    companion_map: mmap.mmap | None
    """None for a ring another program (std_daq) made: no seqlock, no ids."""
    data_id: FileId
    companion_id: FileId | None
    lock_fd: int | None
    """The flock'ed companion fd of the owner; None for an attacher."""
    data_fd: int
    """The data segment, open while mapped (fstat tells a size change under the mapping)."""


def segment_paths(name: str, shm_dir: str) -> tuple[str, str]:
    """(data path, companion path) of ring `name`."""
    check_name(name)
    data_path = os.path.join(shm_dir, name)
    return data_path, data_path + COMPANION_SUFFIX


def check_name(name: str) -> None:
    """Refuse names that are not a single POSIX shm object name."""
    if not name or "/" in name or name.startswith(".") or "\0" in name:
        raise RingError(f"ring name {name!r} must be a plain file name (no '/', not hidden)")


def file_id(path: str) -> FileId | None:
    """The identity of the file `path` names now, or None if it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def size_mismatch(name: str, path: str, found: int, geometry: RingGeometry, who: str) -> str:
    """One line refusing a data segment of the wrong size, naming both sizes."""
    return (
        f"ring {name!r}: {path} has {found} bytes but this config needs {geometry.total_bytes} "
        f"bytes ({describe_geometry(geometry)}); {who} uses it with another config: refusing to "
        "map or resize it (give every service the same image size, bit_depth and ram_buffer_gb)"
    )


def _fd_id(fd: int) -> FileId:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _map(fd: int, length: int, *, writable: bool) -> mmap.mmap:
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    return mmap.mmap(fd, length, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=prot)


def _allocate(fd: int, nbytes: int, path: str, name: str) -> None:
    """Really allocate every page of the file (tmpfs), or raise a clear RingError."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            vfs = os.statvfs(os.path.dirname(path) or ".")
            free = vfs.f_bavail * vfs.f_frsize
            raise RingError(
                f"ring {name!r}: not enough space for {path}: needs {nbytes} bytes "
                f"({nbytes / 2**30:.2f} GiB), {free / 2**30:.2f} GiB free in "
                f"{os.path.dirname(path)}; lower ram_buffer_gb or enlarge /dev/shm"
            ) from exc
        raise RingError(f"ring {name!r}: cannot allocate {path}: {exc.strerror}") from exc


def _lock_companion(path: str, name: str, mode: int) -> int:
    """Open (or create) the companion file and take its exclusive lock; return the fd."""
    for _ in range(_LOCK_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
        except OSError as exc:
            raise RingError(f"ring {name!r}: cannot open {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = owner_pid_of(os.pread(fd, HEADER_BYTES, 0))
            os.close(fd)
            who = f"pid {pid}" if pid else "a process that is still creating it"
            raise RingOwnerExists(
                f"ring {name!r} is already owned by a live process ({who}; lock held on "
                f"{path}): stop that process first, or attach() to read the ring"
            ) from None
        if file_id(path) == _fd_id(fd):
            return fd
        os.close(fd)  # the name was replaced or unlinked while we locked: look again
    raise RingError(f"ring {name!r}: {path} keeps being replaced while trying to lock it")


def _stamp_owner(fd: int) -> None:
    """Write our pid into a locked companion so contenders' errors name us."""
    os.pwrite(fd, os.getpid().to_bytes(8, "little"), W_OWNER_PID * 8)


def _temp_path(shm_dir: str, name: str) -> str:
    return os.path.join(shm_dir, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def _can_take_over(old: RingHeader | None, geometry: RingGeometry, data_path: str) -> bool:
    """True when the previous owner's segments fit `geometry` and can be kept in place."""
    if old is None or old.version != LAYOUT_VERSION or old.geometry != geometry:
        return False
    if old.total_bytes != geometry.total_bytes:
        return False
    try:
        st = os.stat(data_path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (old.data_dev, old.data_ino) and (st.st_size == geometry.total_bytes)


def _replace_reason(old: RingHeader, geometry: RingGeometry, data_path: str) -> str:
    if old.version != LAYOUT_VERSION:
        return f"its layout version is {old.version}, not {LAYOUT_VERSION}"
    if old.geometry != geometry:
        return f"it has {describe_geometry(old.geometry)}, not {describe_geometry(geometry)}"
    if file_id(data_path) is None:
        return f"its data segment {data_path} is missing"
    return f"{data_path} is no longer the data segment it describes"


def create_segments(
    name: str, geometry: RingGeometry, shm_dir: str = DEFAULT_SHM_DIR, mode: int = DEFAULT_MODE
) -> Segments:
    """Create ring `name` as its owner (or take over from a dead owner); see module doc."""
    if geometry.slot_bytes <= 0 or geometry.n_slots <= 0:
        raise RingError(f"ring {name!r}: invalid geometry {describe_geometry(geometry)}")
    data_path, companion_path = segment_paths(name, shm_dir)
    lock_fd = _lock_companion(companion_path, name, mode)
    try:
        raw = os.pread(lock_fd, HEADER_BYTES, 0)
        old = decode_header(raw)
        _stamp_owner(lock_fd)
        if _can_take_over(old, geometry, data_path):
            assert old is not None
            segments = _take_over(name, geometry, data_path, companion_path, lock_fd, old)
            if segments is not None:
                return segments
        if old is not None:
            log.warning(
                "ring %r: previous owner (pid %d) is gone; replacing its segments because %s",
                name,
                old.owner_pid,
                _replace_reason(old, geometry, data_path),
            )
        elif len(raw) > (W_OWNER_PID + 1) * 8:
            log.warning("ring %r: replacing unrecognised file %s", name, companion_path)
        segments = _build_fresh(name, geometry, shm_dir, data_path, companion_path, old, mode)
    except BaseException:
        if old is None and file_id(companion_path) == _fd_id(lock_fd):
            with contextlib.suppress(OSError):  # the lock file we made: leave nothing behind
                os.unlink(companion_path)
        os.close(lock_fd)
        raise
    if old is not None:
        os.pwrite(lock_fd, STATE_RETIRED.to_bytes(8, "little"), W_STATE * 8)
    os.close(lock_fd)  # the old companion's lock; the new one is locked by segments.lock_fd
    return segments


def _take_over(
    name: str,
    geometry: RingGeometry,
    data_path: str,
    companion_path: str,
    lock_fd: int,
    old: RingHeader,
) -> Segments | None:
    """Keep a dead owner's segments (readers stay attached); None if they changed meanwhile.

    The new owner keeps `lock_fd` (the old companion's fd) and with it the lock.
    """
    try:
        data_fd = os.open(data_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RingError(f"ring {name!r}: cannot open {data_path}: {exc.strerror}") from exc
    try:
        data_st = os.fstat(data_fd)
        data_id = (data_st.st_dev, data_st.st_ino)
        if data_id != (old.data_dev, old.data_ino) or data_st.st_size != geometry.total_bytes:
            os.close(data_fd)
            return None
        _allocate(data_fd, geometry.total_bytes, data_path, name)
        _allocate(lock_fd, companion_bytes(geometry.n_slots), companion_path, name)
        data_map = _map(data_fd, geometry.total_bytes, writable=True)
    except BaseException:
        os.close(data_fd)
        raise
    companion_map = _map(lock_fd, companion_bytes(geometry.n_slots), writable=True)
    words = memoryview(companion_map)[:HEADER_BYTES].cast("Q")
    words[W_OWNER_PID] = os.getpid()
    words[W_CREATED_NS] = time.time_ns()
    words[W_STATE] = STATE_ACTIVE
    words.release()
    log.warning(
        "ring %r: previous owner (pid %d) is gone; taking over %s and %s in place (readers stay attached)",
        name,
        old.owner_pid,
        data_path,
        companion_path,
    )
    return Segments(
        name=name,
        geometry=geometry,
        data_path=data_path,
        companion_path=companion_path,
        data_map=data_map,
        companion_map=companion_map,
        data_id=data_id,
        companion_id=_fd_id(lock_fd),
        lock_fd=lock_fd,
        data_fd=data_fd,
    )


def _build_fresh(
    name: str,
    geometry: RingGeometry,
    shm_dir: str,
    data_path: str,
    companion_path: str,
    old: RingHeader | None,
    mode: int,
) -> Segments:
    """New companion (and new or adopted data segment), renamed into place: the companion
    first, then a new data segment, so no one ever sees our data without its companion."""
    data_map, data_id, data_fd, data_temp = _make_data_segment(name, geometry, shm_dir, data_path, old, mode)
    temp = _temp_path(shm_dir, name)
    fd = -1
    try:
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        os.fchmod(fd, mode)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        size = companion_bytes(geometry.n_slots)
        _allocate(fd, size, temp, name)
        companion_map = _map(fd, size, writable=True)
        words = memoryview(companion_map)[:HEADER_BYTES].cast("Q")
        init_header(
            words,
            geometry,
            owner_pid=os.getpid(),
            created_ns=time.time_ns(),
            data_dev=data_id[0],
            data_ino=data_id[1],
        )
        words.release()
        os.rename(temp, companion_path)
        if data_temp is not None:
            os.rename(data_temp, data_path)
    except BaseException as exc:
        for path in (temp, data_temp):
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if fd >= 0:
            os.close(fd)
        data_map.close()
        os.close(data_fd)
        if isinstance(exc, OSError):
            raise RingError(f"ring {name!r}: cannot create {companion_path}: {exc}") from exc
        raise
    return Segments(
        name=name,
        geometry=geometry,
        data_path=data_path,
        companion_path=companion_path,
        data_map=data_map,
        companion_map=companion_map,
        data_id=data_id,
        companion_id=_fd_id(fd),
        lock_fd=fd,
        data_fd=data_fd,
    )


def _make_data_segment(
    name: str,
    geometry: RingGeometry,
    shm_dir: str,
    data_path: str,
    old: RingHeader | None,
    mode: int,
) -> tuple[mmap.mmap, FileId, int, str | None]:
    """Adopt a foreign data segment of the right size in place, or make a new one.

    Returns (map, identity, open fd, temp path to rename into place or None if adopted).
    A segment of another size is refused (RingError), unless it is the untouched data
    segment of our own dead previous owner (replaced by rename: its mappings stay valid).
    """
    total = geometry.total_bytes
    try:
        st: os.stat_result | None = os.stat(data_path)
    except FileNotFoundError:
        st = None
    old_data = None if old is None else (old.data_dev, old.data_ino)
    if st is not None:
        ours = (st.st_dev, st.st_ino) == old_data and old is not None and st.st_size == old.total_bytes
        if not ours and (not stat.S_ISREG(st.st_mode) or st.st_size != total):
            raise RingError(size_mismatch(name, data_path, st.st_size, geometry, "another program"))
        if not ours:
            adopted = _adopt_data_segment(name, geometry, data_path, (st.st_dev, st.st_ino))
            if adopted is not None:
                return (*adopted, None)
        else:
            log.warning(
                "ring %r: replacing %s (%d bytes; the ring needs %d)", name, data_path, st.st_size, total
            )
    temp = _temp_path(shm_dir, name)
    try:
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise RingError(f"ring {name!r}: cannot create a segment in {shm_dir}: {exc}") from exc
    try:
        os.fchmod(fd, mode)
        _allocate(fd, total, data_path, name)
        return _map(fd, total, writable=True), _fd_id(fd), fd, temp
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise RingError(f"ring {name!r}: cannot create {data_path}: {exc}") from exc
        raise


def _adopt_data_segment(
    name: str, geometry: RingGeometry, data_path: str, seen: FileId
) -> tuple[mmap.mmap, FileId, int] | None:
    """Map an existing data segment (e.g. made by a std_daq service) in place."""
    total = geometry.total_bytes
    try:
        fd = os.open(data_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RingError(f"ring {name!r}: cannot open existing {data_path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != seen:
            os.close(fd)
            return None
        if st.st_size != total:
            raise RingError(size_mismatch(name, data_path, st.st_size, geometry, "another program"))
        _allocate(fd, total, data_path, name)
        data_map = _map(fd, total, writable=True)
    except BaseException:
        os.close(fd)
        raise
    log.warning(
        "ring %r: adopting the existing %s (%d bytes, made by another program such as a "
        "std_daq service); its readers see the images written from now on",
        name,
        data_path,
        total,
    )
    return data_map, seen, fd


def attach_segments(
    name: str,
    geometry: RingGeometry | None,
    shm_dir: str = DEFAULT_SHM_DIR,
    timeout: float = 0.0,
    *,
    foreign: bool = False,
) -> Segments:
    """Map an existing ring read-only, waiting up to `timeout` s for its owner.

    `foreign`: a data segment without a stddaq companion (made by a std_daq service) is
    attached too, as std_daq's readers attach it (needs `geometry`; same size rule).
    """
    data_path, companion_path = segment_paths(name, shm_dir)
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        found = _try_attach(name, geometry, data_path, companion_path, foreign)
        if isinstance(found, Segments):
            return found
        if time.monotonic() >= deadline:
            waited = f" (waited {timeout:g} s)" if timeout > 0 else ""
            raise RingError(found + waited)
        time.sleep(ATTACH_POLL_S)


def _try_attach_foreign(name: str, geometry: RingGeometry | None, data_path: str) -> Segments | str:
    """Map a data segment that has no companion read-only, as std_daq's readers do."""
    if geometry is None:
        return f"ring {name!r}: {data_path} has no stddaq companion and no geometry was given"
    try:
        data_fd = os.open(data_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"ring {name!r} does not exist: {data_path} is missing"
    except OSError as exc:
        raise RingError(f"ring {name!r}: cannot open {data_path}: {exc.strerror}") from exc
    try:
        st = os.fstat(data_fd)
        if st.st_size == 0 and stat.S_ISREG(st.st_mode):
            os.close(data_fd)
            return f"ring {name!r}: {data_path} is still empty (its maker has not sized it yet)"
        if not stat.S_ISREG(st.st_mode) or st.st_size != geometry.total_bytes:
            raise RingError(size_mismatch(name, data_path, st.st_size, geometry, "the program that made it"))
        # No MAP_POPULATE: a std_daq segment may be sparse (a 1000-slot ring of large images).
        data_map = mmap.mmap(data_fd, geometry.total_bytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except BaseException:
        os.close(data_fd)
        raise
    return Segments(
        name=name,
        geometry=geometry,
        data_path=data_path,
        companion_path=data_path + COMPANION_SUFFIX,
        data_map=data_map,
        companion_map=None,
        data_id=(st.st_dev, st.st_ino),
        companion_id=None,
        lock_fd=None,
        data_fd=data_fd,
    )


def _try_attach(
    name: str, geometry: RingGeometry | None, data_path: str, companion_path: str, foreign: bool
) -> Segments | str:
    """The attached segments, or the reason (a message) why not yet."""
    try:
        companion_fd = os.open(companion_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if foreign and file_id(data_path) is not None:
            return _try_attach_foreign(name, geometry, data_path)
        hint = ""
        if file_id(data_path) is not None:
            hint = f"; {data_path} exists but has no stddaq companion (made by std_daq?)"
        return f"ring {name!r} does not exist: {companion_path} is missing{hint}"
    except OSError as exc:
        raise RingError(f"ring {name!r}: cannot open {companion_path}: {exc.strerror}") from exc
    try:
        header = decode_header(os.pread(companion_fd, HEADER_BYTES, 0))
        problem = _header_problem(name, companion_path, header, geometry)
        if problem is not None:
            return problem
        assert header is not None
        found = header.geometry
        if os.fstat(companion_fd).st_size < companion_bytes(found.n_slots):
            return f"ring {name!r}: {companion_path} is shorter than its header says"
        try:
            data_fd = os.open(data_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return f"ring {name!r}: its data segment {data_path} is missing (unlinked?)"
        except OSError as exc:
            raise RingError(f"ring {name!r}: cannot open {data_path}: {exc.strerror}") from exc
        try:
            data_st = os.fstat(data_fd)
            if (data_st.st_dev, data_st.st_ino) != (header.data_dev, header.data_ino):
                os.close(data_fd)
                return f"ring {name!r}: {data_path} is not the data segment {companion_path} describes"
            if data_st.st_size != header.total_bytes:
                raise RingError(size_mismatch(name, data_path, data_st.st_size, found, "another program"))
            data_map = _map(data_fd, header.total_bytes, writable=False)
        except BaseException:
            os.close(data_fd)
            raise
        companion_map = _map(companion_fd, companion_bytes(found.n_slots), writable=False)
        return Segments(
            name=name,
            geometry=found,
            data_path=data_path,
            companion_path=companion_path,
            data_map=data_map,
            companion_map=companion_map,
            data_id=(data_st.st_dev, data_st.st_ino),
            companion_id=_fd_id(companion_fd),
            lock_fd=None,
            data_fd=data_fd,
        )
    finally:
        os.close(companion_fd)


def _header_problem(
    name: str, path: str, header: RingHeader | None, geometry: RingGeometry | None
) -> str | None:
    """Why a companion header cannot be attached, or None if it can."""
    if header is None:
        return f"ring {name!r}: {path} is not a (complete) stddaq ring companion segment"
    if header.version != LAYOUT_VERSION:
        return (
            f"ring {name!r}: {path} has layout version {header.version}; "
            f"this stddaq reads version {LAYOUT_VERSION}"
        )
    if header.state != STATE_ACTIVE:
        return f"ring {name!r}: {path} is {header.state_name} (last owner pid {header.owner_pid})"
    if header.geometry.slot_bytes <= 0 or header.geometry.n_slots <= 0:
        return f"ring {name!r}: {path} has an invalid geometry in its header"
    if header.total_bytes != header.geometry.total_bytes:
        return f"ring {name!r}: {path} has an inconsistent header (total size)"
    if geometry is not None and header.geometry != geometry:
        return (
            f"ring {name!r} has {describe_geometry(header.geometry)} (owner pid "
            f"{header.owner_pid}) but this service expects {describe_geometry(geometry)}: "
            "both must use the same config (image size, bit_depth, ram_buffer_gb)"
        )
    return None
