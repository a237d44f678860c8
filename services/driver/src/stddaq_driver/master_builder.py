"""The master file built by the driver itself, when no stddaq writer can (every writer is
a std_daq writer, which has no master-file message). Reads the writer files, so the driver
must see their filesystem; the file is made as the driver's user."""

from __future__ import annotations


def build_master_here(master: str, detector: str, files: list[str]) -> str | None:
    """Build `master` over `files` (writer order); None, or the reason it failed."""
    # Imported here: h5py is needed only for this, not on the driver's path to READY.
    from stddaq_common.hdf5.master_file import MasterFileError, build_master_file

    try:
        build_master_file(master, detector, files)
    except MasterFileError as error:
        return str(error)
    return None
