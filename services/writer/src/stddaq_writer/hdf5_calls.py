"""The two HDF5 calls the writer makes for every image, straight into h5py's own libhdf5.

Growing `data` by one image is `H5Dset_extent` between two `H5Fget_filesize` (image_file).
Through h5py each call also takes h5py's lock, passes several Cython wrappers and, for
set_extent, asks for the dataspace to check its rank: that costs more than HDF5's own
work (perf: about half of the writer's HDF5 time per image). Here the same two functions
are called through ctypes in the library h5py loaded (found in /proc/self/maps and opened
with RTLD_NOLOAD, so it is the same instance and the same ids), under h5py's lock.

Where the library cannot be found, or does not give the same file size as h5py for the
file (checked once per file), h5py's calls are used. A call that fails is repeated
through h5py, which raises its usual error (errno text included) or succeeds.
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Any

log = logging.getLogger("stddaq.writer")

_hsize = ctypes.c_uint64
_hid = ctypes.c_int64


def _find_library() -> Any | None:
    """h5py's libhdf5 (already loaded), or None."""
    try:
        import h5py  # noqa: F401  (loads the library)
        from h5py._objects import phil  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = [line.split()[-1] for line in maps if "/libhdf5" in line]
    except OSError:
        return None
    paths = [path for path in paths if os.path.basename(path).startswith("libhdf5")
             and not os.path.basename(path).startswith("libhdf5_hl")]
    if not paths:
        return None
    try:
        library = ctypes.CDLL(paths[0], mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        library.H5Dset_extent.argtypes = [_hid, ctypes.POINTER(_hsize)]
        library.H5Dset_extent.restype = ctypes.c_int
        library.H5Fget_filesize.argtypes = [_hid, ctypes.POINTER(_hsize)]
        library.H5Fget_filesize.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return library, phil


_LIBRARY = _find_library()


class GrowCalls:
    """set_extent of one dataset and get_filesize of its file, by the cheapest way that
    is proven to work for this file."""

    def __init__(self, file_id: Any, data_id: Any, rank: int) -> None:
        self._file_id = file_id
        self._data_id = data_id
        self._size = _hsize()
        self._size_ref = ctypes.byref(self._size)
        self._dims = (_hsize * rank)()
        self._shape = tuple(data_id.shape)
        for axis, length in enumerate(self._shape):
            self._dims[axis] = length
        self._file_hid = int(file_id.id)
        self._data_hid = int(data_id.id)
        self.direct = False
        """True when the calls go to libhdf5 through ctypes."""
        if _LIBRARY is not None:
            library, self._phil = _LIBRARY
            self._set_extent = library.H5Dset_extent
            self._get_filesize = library.H5Fget_filesize
            try:
                self.direct = self._filesize_direct() == file_id.get_filesize()
            except OSError:
                self.direct = False
            if not self.direct:
                log.info("libhdf5 through ctypes disagrees with h5py; using h5py's calls")

    def _filesize_direct(self) -> int:
        with self._phil:
            if self._get_filesize(self._file_hid, self._size_ref) < 0:
                raise OSError("H5Fget_filesize failed")
        return int(self._size.value)

    def filesize(self) -> int:
        """The file's end of allocation (`H5Fget_filesize`: no I/O)."""
        if self.direct:
            with self._phil:
                if self._get_filesize(self._file_hid, self._size_ref) >= 0:
                    return int(self._size.value)
        return int(self._file_id.get_filesize())

    def set_length(self, length: int) -> None:
        """Resize the dataset's first dimension to `length` (the others as set before by
        `set_extent`, or as the dataset was created)."""
        if self.direct:
            self._dims[0] = length
            with self._phil:
                if self._set_extent(self._data_hid, self._dims) >= 0:
                    return
        self._data_id.set_extent((length, *self._shape[1:]))

    def set_extent(self, shape: tuple[int, ...]) -> None:
        """Resize the dataset to `shape` (its rank)."""
        self._shape = tuple(shape)
        if self.direct:
            dims = self._dims
            for axis, length in enumerate(shape):
                dims[axis] = length
            with self._phil:
                if self._set_extent(self._data_hid, dims) >= 0:
                    return
        self._data_id.set_extent(shape)
