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


def interleaved_length(images_per_file: Sequence[int]) -> int:
    """Virtual length: the last entry any file maps to, + 1 (entry j -> file j % N)."""
    n_files = len(images_per_file)
    return max(
        ((count - 1) * n_files + k + 1 for k, count in enumerate(images_per_file) if count > 0),
        default=0,
    )


def read_source(path: str, detector_name: str) -> SourceFile:
    """Open a closed writer file and describe its per-image datasets."""
    try:
        with h5py.File(path, "r") as h5file:
            group = h5file.get(detector_name)
            if not isinstance(group, h5py.Group) or "data" not in group:
                raise MasterFileError(f"{path}: no /{detector_name}/data dataset")
            n_images = int(group["data"].shape[0])
            datasets = {
                name: (tuple(item.shape[1:]), item.dtype)
                for name, item in group.items()
                if isinstance(item, h5py.Dataset) and item.ndim >= 1 and item.shape[0] == n_images
            }
    except OSError as error:
        raise MasterFileError(f"{path}: cannot read the writer file: {error}") from None
    return SourceFile(path, n_images, datasets)


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
) -> MasterSummary:
    """Write the master file of an acquisition whose writer k wrote `file_paths[k]`.

    Call it after every writer closed its file. `file_paths` must be in writer order
    (the interleave depends on it). An unreadable or missing writer file raises
    MasterFileError, unless `skip_unreadable`: its entries then read as missing (status 0)
    and the file is listed in the summary and the `skipped_files` attribute. The master
    file is not overwritten unless `overwrite`.
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
    master_dir = os.path.dirname(os.path.abspath(master_path))
    try:
        with h5py.File(master_path, "w" if overwrite else "w-", libver=FILE_FORMAT_BOUNDS) as h5:
            h5.attrs["default"] = detector_name
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
            group.attrs["interleave"] = "entry j = image j // n_files of file j % n_files"
            group.attrs["acquisition_params"] = json.dumps(params or {}, sort_keys=True)
            group.attrs["daq_config"] = json.dumps(daq_config or {}, sort_keys=True)
            group.attrs["created_at"] = datetime.datetime.now(datetime.UTC).isoformat()
        with h5py.File(master_path, "r") as h5:
            status = h5[detector_name]["metadata"].fields("status")[:] if n_entries else []
            n_missing = int(np.count_nonzero(np.asarray(status) == 0))
    except OSError as error:
        raise MasterFileError(f"{master_path}: cannot write the master file: {error}") from None
    return MasterSummary(master_path, n_entries, counts, names, skipped, n_missing)


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
