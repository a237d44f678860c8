"""Small DAQ config documents for tests (the builder itself lives in stddaq_common.testing,
where the benchmarks use it too) and a uid nobody has."""

from __future__ import annotations

import pwd

from stddaq_common.testing.configs import pco_config, write_pco_config

__all__ = ["pco_config", "unused_uid", "write_pco_config"]


def unused_uid(start: int = 4321) -> int:
    """The first uid from `start` on that no user has (for files written as another user)."""
    uid = start
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1
