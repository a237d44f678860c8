"""`python -m stddaq_receiver CONFIG STREAM_ADDRESS ...`: run the receiver service."""

from __future__ import annotations

import sys

from stddaq_common.runtime.runner import run_service
from stddaq_receiver.service import SERVICE_NAME, add_arguments, build


def main() -> int:
    """Run the receiver until SIGTERM/SIGINT; the exit status."""
    return run_service(SERVICE_NAME, build, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
