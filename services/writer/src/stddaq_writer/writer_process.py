"""The writer service: the socket loop between the driver and the command handling.

Sockets (driver_link.py), as std_daq's writer has them: commands from the driver's
`<D>-driver-<k>`, answers on this writer's `<D>-writer-<k>`, sent without blocking (dropped
and counted if no driver takes them). What the commands do: writer_commands.py; what is
sent back, in which driver's dialect: answers.py.

The loop polls the command socket for at most `TICK_S` and handles one command per poll;
at most every `TICK_S` it does the timed work: the acquisition's upkeep (progress, SWMR
flush, ring checks), a `heartbeat` when nothing else was sent for a second, and the stats
line.
"""

from __future__ import annotations

import threading
import time

from stddaq_common.config.model import DaqConfig
from stddaq_common.runtime.stats import Stats
from stddaq_writer.answers import Answers
from stddaq_writer.driver_link import DriverLink
from stddaq_writer.writer_commands import WriterCommands, WriterOptions

TICK_S = 0.05
HEARTBEAT_INTERVAL_S = 1.0


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
        wait_ms = int(TICK_S * 1000)
        monotonic = time.monotonic
        while not stop.is_set():
            # One command per poll: a receive only when the poll said one is there (a
            # receive that finds nothing costs more than the poll).
            if link.wait_for_command(wait_ms):
                parts = link.receive()
                if parts is not None:
                    handle(parts)
            now = monotonic()
            if now >= self._next_timed_work:  # at most every TICK_S while commands flow
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
