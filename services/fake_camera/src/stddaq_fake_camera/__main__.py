"""`python -m stddaq_fake_camera ...` and `stddaq-fake-camera`: run the fake PCO camera."""

from __future__ import annotations

from stddaq_common.runtime.runner import standalone_main_for
from stddaq_fake_camera.cli import SERVICE_NAME, CameraService, parse_args, ready_line

main = standalone_main_for(SERVICE_NAME, parse_args, CameraService, ready_line)
"""Console entry point: runs the camera through stddaq_common.runtime.runner (exits with its status)."""

if __name__ == "__main__":
    main()
