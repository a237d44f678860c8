"""The master file built by the driver itself, when no stddaq writer can (every writer is
a std_daq writer, which has no master-file message, or no stddaq writer closed its file
after a writer was lost). Reads the writer files, so the driver must see their
filesystem; the file is made as the driver's user."""

from __future__ import annotations

from stddaq_common.bus.driver_writer import MasterCommand


def build_master_here(master: str, detector: str, files: list[str]) -> str | None:
    """Build `master` over `files` (writer order); None, or the reason it failed."""
    return build_master_for(MasterCommand(acq_id=0, file=master, files=files, detector=detector))


def build_master_for(command: MasterCommand) -> str | None:
    """Build the master file `command` describes (incomplete when it gives a reason);
    None, or the reason it failed."""
    # Imported here: h5py is needed only for this, not on the driver's path to READY.
    from stddaq_common.hdf5.master_file import MasterFileError, build_master_file

    try:
        build_master_file(
            command.file,
            command.detector,
            command.files,
            skip_unreadable=bool(command.incomplete_reason),
            incomplete_reason=command.incomplete_reason or None,
            images_dealt=command.images_per_file,
        )
    except MasterFileError as error:
        return str(error)
    return None
