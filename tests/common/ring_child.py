"""Child processes for tests/common/test_ring.py, and the frame pattern they share.

Run as `python tests/common/ring_child.py ROLE ...`:
- `own NAME SLOT_BYTES N_SLOTS [--first F] [--count C] [--delay S] [--at T]`: (after S
  seconds, or at time T) create the ring, write frames F..F+C-1, print `READY <pid>`, hold
  the ring until stdin closes, then close it (unlinks) and print `CLOSED`. Prints
  `REFUSED <message>` and exits 3 if a live owner holds the ring.
- `read NAME SLOT_BYTES N_SLOTS --first F --count C`: attach, read_into every id, check
  each frame pixel by pixel, print one JSON line, exit without calling close().
- `race-writer NAME SLOT_BYTES N_SLOTS`: create, print `READY <pid>`, write ids 0, 1, 2 ...
  as fast as it can until stdin closes, then close and print `WROTE <count>`.
- `threads-writer NAME SLOT_BYTES N_SLOTS --threads T`: like race-writer, but T threads
  write at the same time through start_write/finish_write, thread t the ids t, t+T, t+2T ...
  (N_SLOTS a multiple of T: each thread has its own slots), straight into the slot; prints
  `WROTE <count>` (all threads) and `BUSY <n>` (SlotBusy refusals: must be 0). With
  `--pause S`, each thread rests a random 0..S seconds after each write (its slot holds a
  whole frame meanwhile, so a reader sees both clean reads and reads cut by a write).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import select
import sys
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from stddaq_common.ring.geometry import RingGeometry
from stddaq_common.ring.image_ring import ImageRing, RingOwnerExists, SlotBusy

Frame = npt.NDArray[np.uint16]


@functools.lru_cache(maxsize=4)
def _ramp(n_pixels: int) -> Frame:
    """A fixed, irregular pixel pattern (so shifted or mixed copies never match)."""
    index = np.arange(n_pixels, dtype=np.uint64)
    return ((index * 40503) & 0xFFFF).astype(np.uint16)


def fill_frame(out: Frame, image_id: int) -> None:
    """Write the frame of `image_id`: the ramp shifted by a function of the id, and the
    full 64-bit id in the first four pixels."""
    np.add(_ramp(out.size), np.uint16((image_id * 7919) & 0xFFFF), out=out)
    out[:4] = np.frombuffer(image_id.to_bytes(8, "little"), dtype=np.uint16)


def make_frame(n_pixels: int, image_id: int) -> Frame:
    """A new frame of `image_id`."""
    frame = np.empty(n_pixels, dtype=np.uint16)
    fill_frame(frame, image_id)
    return frame


def _stdin_closed() -> bool:
    readable, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(readable) and os.read(sys.stdin.fileno(), 1) == b""


def _hold_until_stdin_closes() -> None:
    while os.read(sys.stdin.fileno(), 1024):
        pass


def own(args: argparse.Namespace) -> None:
    """Create the ring, write some frames, hold it until stdin closes, then close it."""
    time.sleep(args.delay)
    if args.at:  # a rendezvous, so that several creators really race
        time.sleep(max(0.0, args.at - time.time()))
    geometry = RingGeometry(args.slot_bytes, args.n_slots)
    try:
        ring = ImageRing.create(args.name, geometry)
    except RingOwnerExists as exc:
        print(f"REFUSED {exc}", flush=True)
        sys.exit(3)
    frame = np.empty(args.slot_bytes // 2, dtype=np.uint16)
    for image_id in range(args.first, args.first + args.count):
        fill_frame(frame, image_id)
        ring.write(image_id, frame)
    print(f"READY {os.getpid()}", flush=True)
    _hold_until_stdin_closes()
    ring.close()
    print("CLOSED", flush=True)


def read(args: argparse.Namespace) -> None:
    """Attach, read every id, check every pixel; one JSON line; exit without close()."""
    ring = ImageRing.attach(args.name, RingGeometry(args.slot_bytes, args.n_slots), timeout=30)
    out = np.empty(args.slot_bytes // 2, dtype=np.uint16)
    expected = np.empty_like(out)
    result: dict[str, Any] = {"good": 0, "bad": 0, "missing": 0}
    for image_id in range(args.first, args.first + args.count):
        nbytes = ring.read_into(image_id, out)
        if nbytes is None:
            result["missing"] += 1
            continue
        fill_frame(expected, image_id)
        ok = nbytes == out.nbytes and np.array_equal(out, expected)
        result["good" if ok else "bad"] += 1
    result["counters"] = ring.counters
    print(json.dumps(result), flush=True)


def race_writer(args: argparse.Namespace) -> None:
    """Write ids 0, 1, 2 ... as fast as possible until stdin closes."""
    ring = ImageRing.create(args.name, RingGeometry(args.slot_bytes, args.n_slots))
    frame = np.empty(args.slot_bytes // 2, dtype=np.uint16)
    print(f"READY {os.getpid()}", flush=True)
    image_id = 0
    while not _stdin_closed():
        fill_frame(frame, image_id)  # slot complete (even) meanwhile: readers race the write
        ring.write(image_id, frame)
        image_id += 1
    ring.close()
    print(f"WROTE {image_id}", flush=True)


def threads_writer(args: argparse.Namespace) -> None:
    """T threads write their own ids (and slots) at the same time until stdin closes."""
    ring = ImageRing.create(args.name, RingGeometry(args.slot_bytes, args.n_slots))
    stop = threading.Event()
    written = [0] * args.threads
    busy = [0] * args.threads

    def write_loop(thread: int) -> None:
        image_id = thread
        while not stop.is_set():
            try:
                token = ring.start_write(image_id)
            except SlotBusy:
                busy[thread] += 1
                continue
            fill_frame(np.frombuffer(token.data, dtype=np.uint16), image_id)  # straight into the slot
            ring.finish_write(token, args.slot_bytes)
            written[thread] += 1
            image_id += args.threads
            if args.pause > 0:
                stop.wait(random.uniform(0.0, args.pause))

    threads = [threading.Thread(target=write_loop, args=(t,)) for t in range(args.threads)]
    for thread in threads:
        thread.start()
    print(f"READY {os.getpid()}", flush=True)
    _hold_until_stdin_closes()
    stop.set()
    for thread in threads:
        thread.join()
    ring.close()
    print(f"WROTE {sum(written)}", flush=True)
    print(f"BUSY {sum(busy)}", flush=True)


def main() -> None:
    """Parse the role and run it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["own", "read", "race-writer", "threads-writer"])
    parser.add_argument("name")
    parser.add_argument("slot_bytes", type=int)
    parser.add_argument("n_slots", type=int)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--at", type=float, default=0.0, help="start at this time.time()")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.0, help="threads-writer: rest 0..S s per write")
    args = parser.parse_args()
    roles = {"own": own, "read": read, "race-writer": race_writer, "threads-writer": threads_writer}
    roles[args.role](args)


if __name__ == "__main__":
    main()
