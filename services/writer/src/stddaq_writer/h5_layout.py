"""The HDF5 file layout: creating a writer file and its datasets (spec section 7).

Layout of `<path>/<file_prefix><k>.h5`, exactly std_daq's where std_daq has one:

- group `/<detector_name>/`
- `data`: uint8/16/32 `[n, H, W]`, unlimited first dimension, one image per chunk,
  optionally with the bitshuffle+LZ4 filter (id 32008);
- `metadata`: compound `{image_id: u64, status: u64}`, one record per image, same order;
- beyond upstream, one u64 dataset per per-image detector field (`timestamp` for pco:
  the BSREAD global timestamp in ns since the epoch; gigafrost: `frame_timestamp`, ...),
  attributes with the acquisition parameters and the DAQ config (JSON) and NeXus-style
  attributes (`NX_class="NXdata"`, `signal="data"`).

Files use the file-format bounds ('v110', 'v110'): HDF5 1.10 readers (h5dump 1.10) read
them, and they allow SWMR.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter with h5py)
import numpy as np

from stddaq_common.bus.metadata import DetectorInfo, EgInfo, GfInfo, JfInfo, PcoInfo
from stddaq_common.hdf5 import FILE_FORMAT_BOUNDS
from stddaq_common.wire.compression import FILE_COMPRESSIONS, CompressionName
from stddaq_writer.direct_io import ALIGNMENT, DirectChunkWriter, direct_io_possible

BITSHUFFLE_FILTER_ID = 32008
BITSHUFFLE_LZ4_OPTIONS = (0, 2)
"""cd_values of filter 32008: block size 0 (automatic, from the chunk header), 2 = LZ4."""

METADATA_DTYPE = np.dtype([("image_id", "<u8"), ("status", "<u8")])
"""Upstream's per-image record."""

STATUS_MISSING = 0
"""Status recorded for an image that is not in the file (ImageMetadataStatus undefined)."""

METADATA_CHUNK_RECORDS = 4096
"""Records per chunk of the metadata and per-image field datasets (64 KiB / 32 KiB)."""

COMPRESSIONS = FILE_COMPRESSIONS

METADATA_BLOCK_BYTES = 1 << 20
"""Direct-I/O files: HDF5 takes file space for its metadata (chunk index blocks, ...) in
blocks of this size instead of 2 KiB, so growing `data` by a block of chunks almost never
puts metadata among the new chunks (direct_io, image_file). Placement only: readers see
the same file."""


@dataclass(frozen=True, slots=True)
class ImageColumn:
    """One per-image dataset filled from the detector part of ImageMetadata."""

    name: str
    description: str
    units: str | None
    value_of: Callable[[DetectorInfo], int]


def _pco_timestamp_ns(info: DetectorInfo) -> int:
    assert isinstance(info, PcoInfo)
    return info.global_timestamp_sec * 1_000_000_000 + info.global_timestamp_ns


def _gf(name: str) -> Callable[[DetectorInfo], int]:
    def value_of(info: DetectorInfo) -> int:
        assert isinstance(info, GfInfo)
        return int(getattr(info, name))

    return value_of


def _jf_daq_rec(info: DetectorInfo) -> int:
    assert isinstance(info, JfInfo)
    return info.daq_rec


def _eg_exptime(info: DetectorInfo) -> int:
    assert isinstance(info, EgInfo)
    return info.exptime


_PCO_COLUMNS = (
    ImageColumn("timestamp", "BSREAD global timestamp of the image", "ns", _pco_timestamp_ns),
)
_GF_COLUMNS = tuple(
    ImageColumn(name, f"GigaFRoST {name}", None, _gf(name))
    for name in ("frame_timestamp", "exposure_time", "scan_id", "scan_time", "sync_time")
)
_COLUMNS_OF_TYPE: dict[str, tuple[ImageColumn, ...]] = {
    "pco": _PCO_COLUMNS,
    "bsread": _PCO_COLUMNS,
    "gigafrost": _GF_COLUMNS,
    "eiger": (ImageColumn("exptime", "EIGER exposure time", None, _eg_exptime),),
    "jungfrau": (ImageColumn("daq_rec", "JUNGFRAU DAQ register", None, _jf_daq_rec),),
    "jungfrau-raw": (ImageColumn("daq_rec", "JUNGFRAU DAQ register", None, _jf_daq_rec),),
    "jungfrau-converted": (ImageColumn("daq_rec", "JUNGFRAU DAQ register", None, _jf_daq_rec),),
}
_INFO_OF_TYPE: dict[str, type] = {
    "pco": PcoInfo,
    "bsread": PcoInfo,
    "gigafrost": GfInfo,
    "eiger": EgInfo,
    "jungfrau": JfInfo,
    "jungfrau-raw": JfInfo,
    "jungfrau-converted": JfInfo,
}


def image_columns(detector_type: str) -> tuple[ImageColumn, ...]:
    """The per-image detector fields stored for a detector type (may be empty)."""
    return _COLUMNS_OF_TYPE.get(detector_type, ())


def detail_type(detector_type: str) -> type | None:
    """The ImageMetadata detector part the columns of `detector_type` are read from."""
    return _INFO_OF_TYPE.get(detector_type)


@dataclass(frozen=True, slots=True)
class FileSpec:
    """What a writer file holds: image geometry, pixel type, compression, detector."""

    detector_name: str
    detector_type: str
    height: int
    width: int
    dtype: np.dtype[Any]
    compression: CompressionName = "none"
    columns: tuple[ImageColumn, ...] = field(default=())

    @property
    def image_bytes(self) -> int:
        """Uncompressed bytes of one image."""
        return self.height * self.width * self.dtype.itemsize


@dataclass(slots=True)
class ImageFileHandles:
    """The open HDF5 objects of one writer file."""

    file: Any
    group: Any
    data: Any
    metadata: Any
    columns: list[Any]
    direct: DirectChunkWriter | None = None
    """O_DIRECT writer of the image chunks (None: they go through HDF5)."""


def _json_attr(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _scalar_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters that fit a plain HDF5 attribute (str, int, float, bool)."""
    return {
        f"param_{key}": value
        for key, value in params.items()
        if isinstance(value, str | int | float | bool)
    }


def create_image_file(
    path: str,
    spec: FileSpec,
    *,
    attributes: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    daq_config: dict[str, Any] | None = None,
    direct_io: bool = False,
) -> ImageFileHandles:
    """Create a new writer file (fails if it exists), its datasets and attributes.

    With `direct_io`, when the images are uncompressed, at least 64 KiB and the file
    system takes O_DIRECT, `handles.direct` is an O_DIRECT writer of the
    file: large allocations are aligned to 4 KiB and `data` allocates each chunk when it
    grows (early allocation) without writing fill values, so the chunk's place is known
    before the image is written (direct_io). Readers see the same file: same datasets,
    shapes, chunking, fill value 0; only the storage properties say "allocated early, fill
    never" (the writer writes every chunk, zeros for missing images).

    The file is left open in SWMR-write mode: a reader may open it with
    `h5py.File(path, "r", swmr=True)` and follow it with `dataset.refresh()`.
    Attributes that change at close (`n_images`, ...) are created here with a
    placeholder so that they only need overwriting later.
    """
    if spec.compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {spec.compression!r}, expected one of {COMPRESSIONS}")
    direct_io = direct_io and spec.compression == "none" and direct_io_possible(spec.image_bytes)
    alignment: dict[str, int] = {}
    if direct_io:
        alignment = {
            "alignment_threshold": spec.image_bytes,
            "alignment_interval": ALIGNMENT,
            "meta_block_size": METADATA_BLOCK_BYTES,
        }
    h5file = h5py.File(path, "w-", libver=FILE_FORMAT_BOUNDS, **alignment)
    direct: DirectChunkWriter | None = None
    try:
        if direct_io:
            direct = DirectChunkWriter.open(path, spec.image_bytes)
        handles = _create_layout(
            h5file, spec, attributes or {}, params or {}, daq_config or {}, direct is not None
        )
    except BaseException:
        if direct is not None:
            direct.close()
        h5file.close()
        raise
    handles.direct = direct
    return handles


def _create_layout(
    h5file: Any,
    spec: FileSpec,
    attributes: dict[str, Any],
    params: dict[str, Any],
    daq_config: dict[str, Any],
    early_allocation: bool = False,
) -> ImageFileHandles:
    shape = (0, spec.height, spec.width)
    filter_args: dict[str, Any] = {}
    if spec.compression == "bitshuffle_lz4":
        filter_args = {"compression": BITSHUFFLE_FILTER_ID, "compression_opts": BITSHUFFLE_LZ4_OPTIONS}
    if early_allocation:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        filter_args = {"dcpl": dcpl, "fill_time": "never"}
    h5file.attrs["default"] = spec.detector_name
    group = h5file.create_group(spec.detector_name)
    data = group.create_dataset(
        "data",
        shape=shape,
        maxshape=(None, spec.height, spec.width),
        chunks=(1, spec.height, spec.width),
        dtype=spec.dtype,
        fillvalue=0,
        **filter_args,
    )
    data.attrs["interpretation"] = "image"
    metadata = group.create_dataset(
        "metadata",
        shape=(0,),
        maxshape=(None,),
        chunks=(METADATA_CHUNK_RECORDS,),
        dtype=METADATA_DTYPE,
        fillvalue=np.zeros((), METADATA_DTYPE),
    )
    metadata.attrs["description"] = (
        "image_id and status of each image of data, same order; status 0 = missing"
    )
    columns = []
    for column in spec.columns:
        dset = group.create_dataset(
            column.name,
            shape=(0,),
            maxshape=(None,),
            chunks=(METADATA_CHUNK_RECORDS,),
            dtype="<u8",
            fillvalue=0,
        )
        dset.attrs["description"] = column.description
        if column.units:
            dset.attrs["units"] = column.units
        columns.append(dset)
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = "data"
    group.attrs["detector_name"] = spec.detector_name
    group.attrs["detector_type"] = spec.detector_type
    group.attrs["compression"] = spec.compression
    group.attrs["acquisition_params"] = _json_attr(params)
    group.attrs["daq_config"] = _json_attr(daq_config)
    for name, value in {**_scalar_params(params), **attributes}.items():
        group.attrs[name] = value
    for name, placeholder in FINAL_ATTRIBUTES.items():
        group.attrs[name] = placeholder
    h5file.swmr_mode = True
    return ImageFileHandles(h5file, group, data, metadata, columns)


FINAL_ATTRIBUTES: dict[str, Any] = {
    "n_images": np.int64(-1),
    "n_written": np.int64(0),
    "n_missing": np.int64(0),
    "closed_at": "",
    "close_reason": "",
}
"""Attributes set when the file is closed (placeholders until then; -1 = still open)."""
