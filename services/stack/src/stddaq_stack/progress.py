"""Watch an acquisition: a one-line progress bar until it has ended."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from stddaq_stack.rest_client import DriverClient


def progress_line(status: dict[str, Any], rate: float, width: int = 30) -> str:
    """`[#####-----] 150/300 images  0 missing  95.0 img/s  recording`."""
    written = int(status.get("images_written", 0))
    total = status.get("n_image")
    if total:
        filled = min(width, written * width // int(total))
        bar = "[" + "#" * filled + "-" * (width - filled) + "]"
        count = f"{written}/{total}"
    else:
        bar, count = "", f"{written}"
    return (
        f"{bar} {count} images  {status.get('images_missing', 0)} missing  "
        f"{rate:.1f} img/s  {status.get('state')}"
    )


def watch(
    client: DriverClient,
    acquisition_id: int,
    out: TextIO = sys.stderr,
    period: float = 0.2,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Poll the status until acquisition `acquisition_id` has ended; return its last status."""
    start = time.monotonic()
    last_written, last_time = 0, start
    rate = 0.0
    while True:
        status = client.status()
        now = time.monotonic()
        written = int(status.get("images_written", 0))
        if now - last_time >= 1.0:
            rate = (written - last_written) / (now - last_time)
            last_written, last_time = written, now
        if out.isatty():
            out.write("\r" + progress_line(status, rate) + "\x1b[K")
            out.flush()
        ended = status.get("acquisition_id") == acquisition_id and status.get("outcome") is not None
        if ended and not status.get("busy"):
            if out.isatty():
                out.write("\n")
            return status
        if timeout is not None and now - start > timeout:
            raise TimeoutError(f"acquisition {acquisition_id} did not end within {timeout:.0f} s")
        time.sleep(period)
