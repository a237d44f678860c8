"""The master file: virtual datasets interleaving the N writer files in acquisition order.

`<path>/<file_prefix>.h5` holds `/<D>/data`, `/<D>/metadata` and every per-image column
the writer files share, as virtual datasets: entry j is image j // N of file j % N (the
driver deals image j to writer j % N). Each file k with n_k images maps to the entries
k, k + N, ..., k + (n_k - 1) N, so files with fewer images (the last ones, or a writer
that stopped early) simply leave no entry behind them; the virtual length is the last
mapped entry + 1 and entries no file covers read as the fill value (zeros, status 0 =
missing). Upstream's helper dropped the last image of each file; this one does not.

Source files are referenced by their path relative to the master file's directory, so
the set of files can be moved together; HDF5 looks for relative VDS sources next to the
master file. Run as a command: `python -m stddaq_writer.master_file MASTER FILE...`.
Built by writer 0 (or another stddaq writer), or by the driver when every writer is a
std_daq writer.

An acquisition that lost a writer (killed, crashed) still gets a master file over what the
files hold, marked incomplete (stddaq additions, std_daq's layout unchanged):

- root attribute `complete` (bool), on every master file; `incomplete_reason` (str) when
  it is False: why (the acquisition's error naming the writer, files not closed, not
  readable, or holding fewer images than were dealt);
- `/<D>` attributes `images_dealt_per_file` (int64 per file: what the driver dealt),
  `images_lost` (dealt images that no file holds: neither written nor recorded missing)
  and `files_not_closed` (JSON list of the files their writer never closed: a killed
  writer's file, mapped only up to its last image record of status != 0, as its data
  beyond that may be a half-written image whose record was never flushed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (readers of compressed sources need the filter)
import numpy as np

from stddaq_common.hdf5 import FILE_FORMAT_BOUNDS


class MasterFileError(Exception):
    """The writer files cannot be combined (missing, unreadable, different layouts)."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    """What the master file needs to know about one writer file."""

    path: str
    n_images: int
    datasets: dict[str, tuple[tuple[int, ...], np.dtype[Any]]]
    closed: bool = True
    """False: the writer never closed it (killed): `n_images` are its recorded images."""
    n_present: int = 0
    """Of `n_images`, the images whose metadata status is not 0 (missing)."""


@dataclass(frozen=True, slots=True)
class MasterSummary:
    """The master file written: its path, virtual length and per-file image counts."""

    path: str
    n_entries: int
    images_per_file: list[int]
    datasets: list[str]
    skipped_files: list[str] = field(default_factory=list)
    n_missing: int = 0
    """Entries whose metadata status is 0 (missing in a file, or covered by no file)."""
    complete: bool = True
    incomplete_reason: str = ""
    images_lost: int = 0
    """Dealt images (`images_dealt`) that no file holds."""


def interleaved_length(images_per_file: Sequence[int]) -> int:
    """Virtual length: the last entry any file maps to, + 1 (entry j -> file j % N)."""
    n_files = len(images_per_file)
    return max(
        ((count - 1) * n_files + k + 1 for k, count in enumerate(images_per_file) if count > 0),
        default=0,
    )


def read_source(path: str, detector_name: str) -> SourceFile:
    """Open a writer file and describe its per-image datasets.

    A file its writer never closed (its `n_images` attribute is still -1: the writer was
    killed) counts its images up to the last metadata record of status != 0; it is opened
    in SWMR-read mode if its open-for-write flags were not cleared yet."""
    try:
        try:
            h5file = h5py.File(path, "r")
        except OSError:
            h5file = h5py.File(path, "r", swmr=True)  # left open for write by a killed writer
        with h5file:
            group = h5file.get(detector_name)
            if not isinstance(group, h5py.Group) or "data" not in group:
                raise MasterFileError(f"{path}: no /{detector_name}/data dataset")
            closed = int(group.attrs.get("n_images", 0)) >= 0
            status = _statuses(group, int(group["data"].shape[0]))
            if closed:
                n_images = int(group["data"].shape[0])
            else:  # entries up to its last record of status != 0
                recorded = np.flatnonzero(status != 0)
                n_images = int(recorded[-1]) + 1 if recorded.size else 0
            n_present = int(np.count_nonzero(status[:n_images] != 0))
            datasets = {
                name: (tuple(item.shape[1:]), item.dtype)
                for name, item in group.items()
                if isinstance(item, h5py.Dataset)
                and item.ndim >= 1
                and (item.shape[0] == n_images if closed else item.shape[0] >= n_images)
            }
    except OSError as error:
        raise MasterFileError(f"{path}: cannot read the writer file: {error}") from None
    return SourceFile(path, n_images, datasets, closed, n_present)


def _statuses(group: h5py.Group, n_data: int) -> np.ndarray[Any, Any]:
    """The metadata status of the file's first `n_data` images (fewer if it has fewer
    records; none without a metadata dataset of records)."""
    metadata = group.get("metadata")
    if not isinstance(metadata, h5py.Dataset) or metadata.dtype.names is None:
        return np.zeros(0, np.uint64)
    if "status" not in metadata.dtype.names:
        return np.zeros(0, np.uint64)
    length = min(n_data, int(metadata.shape[0]))
    return np.asarray(metadata.fields("status")[:length]) if length else np.zeros(0, np.uint64)


def _common_datasets(sources: Sequence[SourceFile], detector_name: str) -> list[str]:
    first = sources[0]
    names = [name for name in first.datasets if all(name in s.datasets for s in sources)]
    for source in sources[1:]:
        for name in names:
            if source.datasets[name] != first.datasets[name]:
                raise MasterFileError(
                    f"{source.path}: /{detector_name}/{name} has shape/type "
                    f"{source.datasets[name]}, {first.path} has {first.datasets[name]}"
                )
    if "data" not in names:
        raise MasterFileError("the writer files have no common data dataset")
    return names


def _virtual_layout(
    name: str,
    detector_name: str,
    sources: Sequence[SourceFile | None],
    n_entries: int,
    master_dir: str,
) -> Any:
    n_files = len(sources)
    reference = next(s for s in sources if s is not None)
    tail, dtype = reference.datasets[name]
    layout = h5py.VirtualLayout(shape=(n_entries, *tail), dtype=dtype)
    for k, source in enumerate(sources):
        if source is None or source.n_images == 0:
            continue
        relative = os.path.relpath(os.path.abspath(source.path), master_dir)
        virtual_source = h5py.VirtualSource(
            relative, f"/{detector_name}/{name}", shape=(source.n_images, *tail), dtype=dtype
        )
        last = k + (source.n_images - 1) * n_files
        layout[k : last + 1 : n_files] = virtual_source[0 : source.n_images]
    return layout


def build_master_file(
    master_path: str,
    detector_name: str,
    file_paths: Sequence[str],
    *,
    params: dict[str, Any] | None = None,
    daq_config: dict[str, Any] | None = None,
    skip_unreadable: bool = False,
    overwrite: bool = False,
    incomplete_reason: str | None = None,
    images_dealt: Sequence[int] | None = None,
) -> MasterSummary:
    """Write the master file of an acquisition whose writer k wrote `file_paths[k]`.

    Call it after every writer closed its file. `file_paths` must be in writer order
    (the interleave depends on it). An unreadable or missing writer file raises
    MasterFileError, unless `skip_unreadable`: its entries then read as missing (status 0)
    and the file is listed in the summary and the `skipped_files` attribute. The master
    file is not overwritten unless `overwrite`.

    `images_dealt` (per file, what the driver dealt) lets the file count images no file
    holds. The file is marked incomplete (`complete` False, `incomplete_reason`) when
    `incomplete_reason` is given (the acquisition failed), a file was skipped or never
    closed, or the files hold fewer images than were dealt.
    """
    if not file_paths:
        raise MasterFileError("no writer files given")
    sources: list[SourceFile | None] = []
    skipped: list[str] = []
    for path in file_paths:
        try:
            sources.append(read_source(path, detector_name))
        except MasterFileError:
            if not skip_unreadable:
                raise
            sources.append(None)
            skipped.append(path)
    present = [s for s in sources if s is not None]
    if not present:
        raise MasterFileError(f"none of the writer files can be read: {list(file_paths)}")
    names = _common_datasets(present, detector_name)
    counts = [0 if s is None else s.n_images for s in sources]
    n_entries = interleaved_length(counts)
    not_closed = [s.path for s in present if not s.closed]
    dealt = list(images_dealt) if images_dealt is not None else None
    if dealt is not None and len(dealt) != len(file_paths):
        raise MasterFileError(f"images_dealt has {len(dealt)} counts for {len(file_paths)} files")
    lost = sum(max(0, d - c) for d, c in zip(dealt, counts, strict=True)) if dealt else 0
    reasons = _incomplete_reasons(incomplete_reason, skipped, not_closed, lost)
    master_dir = os.path.dirname(os.path.abspath(master_path))
    try:
        with h5py.File(master_path, "w" if overwrite else "w-", libver=FILE_FORMAT_BOUNDS) as h5:
            h5.attrs["default"] = detector_name
            h5.attrs["complete"] = not reasons
            if reasons:
                h5.attrs["incomplete_reason"] = reasons
            group = h5.create_group(detector_name)
            for name in names:
                layout = _virtual_layout(name, detector_name, sources, n_entries, master_dir)
                group.create_virtual_dataset(name, layout, fillvalue=np.zeros((), layout.dtype))
            group["data"].attrs["interpretation"] = "image"
            group.attrs["NX_class"] = "NXdata"
            group.attrs["signal"] = "data"
            group.attrs["n_images"] = np.int64(n_entries)
            group.attrs["n_files"] = np.int64(len(file_paths))
            group.attrs["files"] = json.dumps([os.path.basename(p) for p in file_paths])
            group.attrs["images_per_file"] = np.asarray(counts, np.int64)
            group.attrs["skipped_files"] = json.dumps(skipped)
            group.attrs["files_not_closed"] = json.dumps([os.path.basename(p) for p in not_closed])
            if dealt is not None:
                group.attrs["images_dealt_per_file"] = np.asarray(dealt, np.int64)
                group.attrs["images_lost"] = np.int64(lost)
            group.attrs["interleave"] = "entry j = image j // n_files of file j % n_files"
            group.attrs["acquisition_params"] = json.dumps(params or {}, sort_keys=True)
            group.attrs["daq_config"] = json.dumps(daq_config or {}, sort_keys=True)
            group.attrs["created_at"] = datetime.datetime.now(datetime.UTC).isoformat()
    except OSError as error:
        raise MasterFileError(f"{master_path}: cannot write the master file: {error}") from None
    n_missing = n_entries - sum(s.n_present for s in present)
    return MasterSummary(
        master_path, n_entries, counts, names, skipped, n_missing, not reasons, reasons, lost
    )


def _incomplete_reasons(
    reason: str | None, skipped: list[str], not_closed: list[str], lost: int
) -> str:
    """Why the master file is incomplete, "" when it is not."""
    parts = [reason] if reason else []
    if skipped:
        parts.append(f"unreadable writer file(s), their images are missing: {skipped}")
    if not_closed:
        parts.append(
            f"file(s) their writer never closed (killed), mapped up to their last recorded "
            f"image: {not_closed}"
        )
    if lost:
        parts.append(f"{lost} dealt image(s) are in no file")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Command line: build a master file from writer files (in writer order)."""
    parser = argparse.ArgumentParser(description="Build the master (VDS) file of an acquisition")
    parser.add_argument("master", help="master file to write, e.g. /data/run1/file.h5")
    parser.add_argument("files", nargs="+", help="writer files in writer order")
    parser.add_argument("--detector", required=True, help="detector_name (the HDF5 group)")
    parser.add_argument("--skip-unreadable", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        summary = build_master_file(
            args.master,
            args.detector,
            args.files,
            skip_unreadable=args.skip_unreadable,
            overwrite=args.overwrite,
        )
    except MasterFileError as error:
        print(f"stddaq-master-file: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"path": summary.path, "n_images": summary.n_entries,
                      "images_per_file": summary.images_per_file,
                      "skipped_files": summary.skipped_files}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
