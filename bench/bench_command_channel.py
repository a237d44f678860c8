"""The driver -> writer command channel: CPU per command at a paced rate, own ZMTP beside libzmq.

The driver sends one command per wake-up at COMMAND_RATE_HZ (as it deals images at a
camera's pace), the writer (a spawned process) takes each with `receive` as its loop does.
Figures (commands per CPU second, higher is better; every thread of each process counted,
libzmq's I/O thread included), each beside libzmq's PUSH -> PULL of the same commands at
the same pace in the same run as the ceiling:
- `command channel: driver side`: CPU of the sending process, the pacing loop's own CPU
  (measured alone in the same run) taken off;
- `command channel: writer side`: CPU of the receiving process.
`lost` counts commands that did not arrive.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import time
from multiprocessing.queues import Queue

import zmq

from bench.harness import BenchRecord, record
from stddaq_common.bus.command_channel import bind_command_push, connect_command_pull
from stddaq_common.bus.transport import LIBZMQ, ZMTP

COMMAND_RATE_HZ = 500.0
PAYLOAD = bytes(180)
"""About a RecordImage's size."""
_GO, _END = b"go", b"end"
_WAIT_S = 10.0


def _writer(address: str, transport: str, count: int, out: Queue) -> None:  # type: ignore[type-arg]
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = connect_command_pull(context, address, 1_000_000, transport=transport)
    got = 0
    started: float | None = None
    last = time.monotonic()
    while time.monotonic() - last < _WAIT_S:
        message = pull.receive(50)
        if message is None:
            continue
        last = time.monotonic()
        if message == [_GO]:
            started = time.process_time()
        elif message == [_END]:
            break
        elif started is not None:
            got += 1
    out.put((got, time.process_time() - (started or time.process_time())))
    pull.close()
    context.term()


def _paced(count: int, send: object) -> float:
    """CPU seconds of `count` paced iterations calling `send()` (a no-op: the pacing alone)."""
    call = send if callable(send) else None
    begin = time.process_time()
    start = time.monotonic()
    for index in range(count):
        delay = start + index / COMMAND_RATE_HZ - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if call is not None:
            call()
    return time.process_time() - begin


def _measure(transport: str, count: int, ipc_dir: str, attempt: int) -> tuple[float, float, int]:
    """(driver CPU s, writer CPU s, lost) for `count` commands over `transport` (a socket
    path of its own per `attempt`: a closed own PUSH leaves its socket file behind)."""
    address = f"ipc://{ipc_dir}/cmd-{transport}-{attempt}"
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = bind_command_push(context, address, 100_000, transport=transport)
    spawn = multiprocessing.get_context("spawn")
    out: Queue = spawn.Queue()  # type: ignore[type-arg]
    writer = spawn.Process(target=_writer, args=(address, transport, count, out))
    writer.start()
    try:
        deadline = time.monotonic() + _WAIT_S
        while not push.send(_GO, 0.05):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {transport} writer never connected")
        time.sleep(0.2)
        failed = 0

        def send() -> None:
            nonlocal failed
            if not push.send(PAYLOAD, 2.0):
                failed += 1

        driver = _paced(count, send)
        push.send(_END, 2.0)
        got, writer_cpu = out.get(timeout=_WAIT_S * 3)
        pacing = _paced(count, None)
        return max(driver - pacing, 1e-9), writer_cpu, count - got + failed
    finally:
        writer.join(_WAIT_S)
        if writer.is_alive():
            writer.kill()
        push.close()
        context.term()


def run(quick: bool) -> list[BenchRecord]:
    """CPU per command of each side, own ZMTP beside libzmq."""
    count = 2000 if quick else 10_000
    repeats = 1 if quick else 3
    ipc_dir = tempfile.mkdtemp(prefix="stddaq-bench-", dir="/tmp")
    best: dict[str, tuple[float, float]] = {}
    lost = {ZMTP: 0, LIBZMQ: 0}
    try:
        for attempt in range(repeats):
            for transport in (LIBZMQ, ZMTP):  # interleaved: both see the same machine
                driver, writer, missing = _measure(transport, count, ipc_dir, attempt)
                lost[transport] += missing
                previous = best.get(transport, (float("inf"), float("inf")))
                best[transport] = (min(previous[0], driver), min(previous[1], writer))
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)
    ceiling = f"libzmq PUSH -> PULL, same {COMMAND_RATE_HZ:g} commands/s, same run"
    return [
        record(
            f"command channel at {COMMAND_RATE_HZ:g}/s: {side}, commands per CPU s",
            count / best[ZMTP][index],
            "cmd/CPU s",
            ceiling,
            count / best[LIBZMQ][index],
            lost=lost[ZMTP],
        )
        for index, side in enumerate(("driver side (own ZMTP PUSH)", "writer side (own ZMTP PULL)"))
    ]
