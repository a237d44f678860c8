"""Test producer process: owns the ring of a config and writes deterministic frames.

`python -m tests.writer.producer CONFIG` prints `ready`, then reads commands from stdin:
`write FIRST COUNT [compressed]` (answers `wrote FIRST COUNT`), `quit` (or EOF) closes
the ring (unlinking it) and exits.
"""

from __future__ import annotations

import signal
import sys

from stddaq_common.config.model import load_config
from stddaq_common.ring.geometry import image_dtype
from stddaq_common.ring.image_ring import ImageRing
from tests.writer.frames import compressed_frame, frame


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)  # leave the `with` block: the ring is closed and unlinked


def main() -> int:
    """Run the producer until `quit`, end of input or SIGTERM."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    config = load_config(sys.argv[1])
    height, width = config.image_pixel_height, config.image_pixel_width
    dtype = image_dtype(config)
    with ImageRing.for_config(config, create=True) as ring:
        print("ready", flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            first, count = int(words[1]), int(words[2])
            compressed = len(words) > 3 and words[3] == "compressed"
            for image_id in range(first, first + count):
                if compressed:
                    ring.write(image_id, compressed_frame(image_id, height, width, dtype))
                else:
                    ring.write(image_id, frame(image_id, height, width, dtype))
            print(f"wrote {first} {count}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
