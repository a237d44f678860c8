"""Wire codecs: BSREAD decode + decompress into a slot, beside the libraries' own decompress.

Frame: 1024x1024 uint16 (2 MiB), Poisson(100) noise, as a camera sends it. GB/s are of
uncompressed image bytes. The slot is a pre-faulted shared mapping (shmem, like the
/dev/shm ring). Ceilings: the `bitshuffle` package decompressing the same blocks into a
new array, with its default OpenMP threads (what any caller gets) and with one thread
(what stddaq's codec uses, see stddaq_common.wire._bshuf_native), the better of the two; and
`lz4.block.decompress` into new bytes. Also recorded: the alternative pipeline, the
library's new array copied into the slot.
"""

from __future__ import annotations

import mmap
import threading
import time
from collections.abc import Callable

import bitshuffle
import lz4.block
import numpy as np
import numpy.typing as npt

from bench.harness import BenchRecord, record
from stddaq_common.wire.bsread import BsreadDecoder, BsreadEncoder, ChannelSpec, decode_value_into
from stddaq_common.wire.compression import default_block_elements

HEIGHT = WIDTH = 1024


def _per_second(calls: int, action: Callable[[], object]) -> float:
    """Calls per second of `action` over `calls` calls (after one warm-up call)."""
    action()
    start = time.perf_counter()
    for _ in range(calls):
        action()
    return calls / max(time.perf_counter() - start, 1e-9)


def _in_new_thread(measure: Callable[[], float]) -> float:
    """Run a measurement in a fresh thread (it gets OpenMP's default thread count)."""
    result: list[float] = []
    worker = threading.Thread(target=lambda: result.append(measure()))
    worker.start()
    worker.join()
    return result[0]


def _shm_slot(frame: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint16]:
    """A pre-faulted slot in a shared anonymous mapping (shmem pages, as /dev/shm)."""
    slot = np.frombuffer(mmap.mmap(-1, frame.nbytes), frame.dtype).reshape(frame.shape)
    slot[...] = 1
    return slot


def _decode_into_slot(frame: npt.NDArray[np.uint16], compression: str) -> tuple[Callable[[], object], bytes]:
    """BsreadDecoder.decode + decode_value_into a pre-faulted slot, as one call; the value part."""
    channel = ChannelSpec.for_image("img", HEIGHT, WIDTH, "uint16", compression=compression)
    parts = BsreadEncoder([channel]).encode(1, (0, 0), [frame])
    decoder = BsreadDecoder()
    slot = _shm_slot(frame)

    def decode_into() -> int:
        message = decoder.decode(parts)
        return decode_value_into(message.channels[0], message.values[0], slot)

    decode_into()  # also sets this thread to one OpenMP thread
    if not np.array_equal(slot, frame):
        raise AssertionError(f"{compression} decode is not pixel-exact")
    return decode_into, bytes(parts[2])


def _interleaved(repeats: int, calls: int, contenders: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Best calls/s of each contender; every round measures each once, so all see the same noise."""
    best = dict.fromkeys(contenders, 0.0)
    for _ in range(repeats):
        for name, measure in contenders.items():
            best[name] = max(best[name], measure())
    return best


def run(quick: bool) -> list[BenchRecord]:
    """Decode throughputs for bitshuffle_lz4 and lz4 frames, each beside its library ceiling."""
    calls, repeats = (20, 3) if quick else (30, 15)
    frame = np.random.default_rng(1).poisson(100, (HEIGHT, WIDTH)).astype(np.uint16)
    gigabytes = frame.nbytes / 1e9

    ours, value = _decode_into_slot(frame, "bitshuffle_lz4")
    blocks = np.frombuffer(value, np.uint8, offset=12)
    block = default_block_elements(frame.itemsize)
    copy_slot = _shm_slot(frame)

    def library() -> npt.NDArray[np.uint16]:
        result: npt.NDArray[np.uint16] = bitshuffle.decompress_lz4(blocks, frame.shape, frame.dtype, block)
        return result

    best = _interleaved(
        repeats,
        calls,
        {
            "ours": lambda: _per_second(calls, ours),
            # A fresh thread runs with OpenMP's default thread count; this one with one thread.
            "default_threads": lambda: _in_new_thread(lambda: _per_second(calls, library)),
            "one_thread": lambda: _per_second(calls, library),
            "with_copy": lambda: _per_second(calls, lambda: np.copyto(copy_slot, library())),
        },
    )
    ceiling = max(best["default_threads"], best["one_thread"])
    records = [
        record(
            "bitshuffle.decompress_lz4 2 MiB, default OpenMP threads",
            best["default_threads"] * gigabytes,
            "GB/s",
        ),
        record("bitshuffle.decompress_lz4 2 MiB, 1 OpenMP thread", best["one_thread"] * gigabytes, "GB/s"),
        record("bitshuffle.decompress_lz4 2 MiB + copy into slot", best["with_copy"] * gigabytes, "GB/s"),
        record(
            "bsread bitshuffle_lz4 2 MiB decode+decompress into slot",
            best["ours"] * gigabytes,
            "GB/s",
            "bitshuffle.decompress_lz4 (new array), best",
            ceiling * gigabytes,
        ),
    ]

    ours, value = _decode_into_slot(frame, "lz4")
    payload = value[4:]
    best = _interleaved(
        repeats,
        calls,
        {
            "ours": lambda: _per_second(calls, ours),
            "library": lambda: _per_second(
                calls, lambda: lz4.block.decompress(payload, uncompressed_size=frame.nbytes)
            ),
        },
    )
    records.append(
        record(
            "bsread lz4 2 MiB decode+decompress into slot",
            best["ours"] * gigabytes,
            "GB/s",
            "lz4.block.decompress (new bytes)",
            best["library"] * gigabytes,
        )
    )
    return records
