"""`python -m stddaq_writer CONFIG --index K` and `stddaq-writer`: run writer K (see writer_process)."""

from __future__ import annotations

from stddaq_common.runtime.runner import main_for
from stddaq_writer.service import SERVICE_NAME, add_arguments, build

main = main_for(SERVICE_NAME, build, add_arguments)
"""Console entry point: runs the service through stddaq_common.runtime.runner (exits with its status)."""

if __name__ == "__main__":
    main()
