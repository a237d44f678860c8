"""The command name a service process shows in `ps -e`, `top` and `/proc/<pid>/comm`.

Started as `python -m stddaq_writer ...` a service would show as `python3`; every service
process names itself `stddaq-<service>` instead (cut to the kernel's 15 characters, e.g.
`stddaq-live-str`), the same name its console script gives it in the container images.
"""

from __future__ import annotations

import ctypes

PR_SET_NAME = 15
COMM_LENGTH = 15


def command_name(service: str) -> str:
    """`stddaq-<service>` with '-' for '_', cut to 15 characters."""
    return f"stddaq-{service.replace('_', '-')}"[:COMM_LENGTH]


def name_process(service: str) -> bool:
    """Set the calling thread's (the main thread's: the process's) command name; False
    where that is not possible (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols, libc's among them
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    return int(prctl(PR_SET_NAME, ctypes.c_char_p(command_name(service).encode()), 0, 0, 0)) == 0
