"""`python -m stddaq_driver CONFIG [options]`: run the driver service."""

from __future__ import annotations

from stddaq_common.runtime.runner import main_for
from stddaq_driver.service import SERVICE_NAME, add_arguments, build

main = main_for(SERVICE_NAME, build, add_arguments)

if __name__ == "__main__":
    main()
