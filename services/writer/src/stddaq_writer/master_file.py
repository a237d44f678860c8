"""The master file (VDS over the writer files): stddaq_common.hdf5.master_file, which the
driver uses too. Run as a command: `python -m stddaq_writer.master_file MASTER FILE...`."""

from __future__ import annotations

import sys

from stddaq_common.hdf5.master_file import (
    MasterFileError,
    MasterSummary,
    SourceFile,
    build_master_file,
    interleaved_length,
    main,
)

__all__ = [
    "MasterFileError",
    "MasterSummary",
    "SourceFile",
    "build_master_file",
    "interleaved_length",
    "main",
]

if __name__ == "__main__":
    sys.exit(main())
