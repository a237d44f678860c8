"""`python -m stddaq_web CONFIG [options]` and `stddaq-web`: run the web service."""

from __future__ import annotations

from stddaq_common.runtime.runner import main_for
from stddaq_web.service import SERVICE_NAME, add_arguments, build

main = main_for(SERVICE_NAME, build, add_arguments)
"""Console entry point: runs the service through stddaq_common.runtime.runner (exits with its status)."""

if __name__ == "__main__":
    main()
