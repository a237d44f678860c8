"""`python -m stddaq_receiver CONFIG STREAM_ADDRESS ...` and `stddaq-receiver`: run the receiver service."""

from __future__ import annotations

from stddaq_common.runtime.runner import main_for
from stddaq_receiver.service import SERVICE_NAME, add_arguments, build

main = main_for(SERVICE_NAME, build, add_arguments)
"""Console entry point: runs the service through stddaq_common.runtime.runner (exits with its status)."""

if __name__ == "__main__":
    main()
