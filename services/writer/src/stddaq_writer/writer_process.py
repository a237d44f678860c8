"""The writer service: the socket loop between the driver and the command handling.

Sockets (driver_link.py), as std_daq's writer has them: commands from the driver's
`<D>-driver-<k>`, answers on this writer's `<D>-writer-<k>`, sent without blocking (dropped
and counted if no driver takes them). What the commands do: writer_commands.py; what is
sent back, in which driver's dialect: answers.py.

The loop waits up to `TICK_S` in one blocking receive and handles each command it gets;
at most every `TICK_S` it does the timed work, on the wake-up of a command when commands
flow: the acquisition's upkeep (progress, SWMR flush, ring checks), a `heartbeat` when
nothing else was sent for a second, and the stats line. (A tick of 100 ms cost each writer
about 2 ms of CPU per second more at 100 images/s, and twice the wake-ups when idle.)
"""

from __future__ import annotations

import gc
import threading
import time

from stddaq_common.config.model import DaqConfig
from stddaq_common.runtime.stats import Stats
from stddaq_writer.answers import Answers
from stddaq_writer.driver_link import DriverLink
from stddaq_writer.writer_commands import WriterCommands, WriterOptions

TICK_S = 0.2
"""Time between two rounds of timed work (and the longest wait in one receive): progress
goes out about this often while images flow."""
TICK_MS = int(TICK_S * 1000)
HEARTBEAT_INTERVAL_S = 1.0


def settle_garbage_collector() -> None:
    """Collect once, then keep everything that exists (modules, h5py, numpy, the
    config: some 100,000 objects) out of the cyclic garbage collector's later passes.

    Per image the writer makes no reference cycles; its collections were triggered by
    the objects an SWMR flush makes and then walked every object of the process (a full
    collection: about 2 % of the writer's CPU at 100 images/s). Frozen objects are still
    freed by reference counting when they are dropped.
    """
    gc.collect()
    gc.freeze()


class WriterService:
    """Writer `index` of a detector: one acquisition at a time, one file per acquisition."""

    def __init__(
        self, config: DaqConfig, index: int, stats: Stats, options: WriterOptions | None = None
    ) -> None:
        self.config = config
        self.index = index
        self._stats = stats
        self._link = DriverLink(config.detector_name, config.ipc_dir, index)
        dropped = stats.counter("dropped_events", "events the driver did not take")
        self._answers = Answers(self._link, index, dropped)
        try:
            self.commands = WriterCommands(config, index, stats, self._answers, options)
        except BaseException:
            self._link.close()
            raise
        self._next_timed_work = 0.0

    def run(self, stop: threading.Event) -> None:
        """Handle commands until `stop` is set (nothing is sent before a driver speaks:
        a std_daq driver expects only answers)."""
        link = self._link
        handle = self.commands.handle
        monotonic = time.monotonic
        settle_garbage_collector()
        while not stop.is_set():
            parts = link.receive(TICK_MS)  # waits up to TICK_S for one command
            if parts is not None:
                handle(parts)
            now = monotonic()
            if now >= self._next_timed_work:  # rides on a command's wake-up when one comes
                self._next_timed_work = now + 0.9 * TICK_S
                self._timed_work(now)

    def _timed_work(self, now: float) -> None:
        self.commands.upkeep(now)
        if now - self._answers.last_sent >= HEARTBEAT_INTERVAL_S:
            self.commands.heartbeat()
        self._stats.maybe_emit()

    def close(self) -> None:
        """Close an open file (reason: writer stopped), the ring and the sockets."""
        try:
            self.commands.close()
        finally:
            self._link.close()
