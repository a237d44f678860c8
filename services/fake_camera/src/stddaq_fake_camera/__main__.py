"""`python -m stddaq_fake_camera ...`: run the fake PCO camera."""

from __future__ import annotations

import sys

from stddaq_fake_camera.cli import main

if __name__ == "__main__":
    sys.exit(main())
