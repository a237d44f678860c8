"""The image-dealing thread: a small loop over three parts, each with one job.

One thread owns every ZeroMQ socket of the driver (the metadata subscriber and the writer
link). The web layer talks to it only through `submit()` (a queue) and the StatusBoard.
Each turn of the loop deals the images that came (ImageDealing, image_dealing.py), applies
the writers' events (WriterEvents, writer_events.py), runs the commands, and lets the
acquisition's life (AcquisitionLife, acquisition_life.py) look at its timeouts and publish
progress. Commands are looked at between batches, at least every POLL_MS; the writers'
events too, except while images are dealt. Every TURN_S one pass does the housekeeping
together: the events (while images are dealt: they report progress every 100 ms), the
probes when due, the timeouts (of seconds) and the progress.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from stddaq_common.bus.metadata_stream import MetadataSubscriber
from stddaq_common.config.model import DaqConfig
from stddaq_common.rate_limited_log import RateLimitedLog
from stddaq_driver.acquisition import AcquisitionPlan
from stddaq_driver.acquisition_life import AcquisitionLife
from stddaq_driver.driver_stats import EngineCounters
from stddaq_driver.engine_parts import (
    DEALING,
    HOLDING,
    LOG_INTERVAL_S,
    POLL_MS,
    PROBE_S,
    SHUTDOWN_TIMEOUT_S,
    TURN_S,
    EngineParts,
)
from stddaq_driver.idle_wait import IdleWait
from stddaq_driver.image_dealing import ImageDealing
from stddaq_driver.receiver_watch import ReceiverView, ReceiverWatch
from stddaq_driver.status_board import StatusBoard
from stddaq_driver.writer_events import WriterEvents
from stddaq_driver.writer_link import WriterLink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StartCommand:
    """Run the acquisition the board already shows as started."""

    plan: AcquisitionPlan


@dataclass(frozen=True, slots=True)
class StopCommand:
    """End acquisition `acquisition_id` early, keeping what was written."""

    acquisition_id: int


@dataclass(frozen=True, slots=True)
class ReconfigureCommand:
    """Use a new config (only sent while idle)."""

    config: DaqConfig


Command = StartCommand | StopCommand | ReconfigureCommand


class Engine:
    """Owns the sockets and composes the dealing thread's parts; `run()` is its body."""

    def __init__(
        self,
        config: DaqConfig,
        board: StatusBoard,
        counters: EngineCounters,
        *,
        maybe_emit_stats: Any = None,
    ) -> None:
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        link = WriterLink(config.detector_name, config.ipc_dir, config.writers)
        try:
            subscriber = MetadataSubscriber.for_config(config, timeout_ms=POLL_MS)
        except Exception:
            link.close()
            raise
        self._parts = EngineParts(
            config, board, counters, link, subscriber, RateLimitedLog(log, LOG_INTERVAL_S)
        )
        self.receiver = ReceiverWatch()
        """Is the receiver running (on demand: status, health, an acquisition error)."""
        self._life = AcquisitionLife(
            self._parts, self.receiver_view, maybe_emit_stats=maybe_emit_stats
        )
        self._idle = IdleWait()
        self._dealing = ImageDealing(self._parts, self._life, self._idle.nap)
        self._events = WriterEvents(self._parts, self._life)
        self._next_turn = 0.0
        self._next_probe = 0.0
        self._idle.watch(subscriber, *link.event_sockets)

    # --- called from other threads ---

    def submit(self, command: Command) -> None:
        """Queue a command for the dealing thread (thread-safe, never blocks)."""
        self._commands.put(command)
        self._idle.wake()

    def receiver_view(self) -> ReceiverView:
        """Whether a process serves the receiver's metadata socket (thread-safe, cached 1 s)."""
        return self.receiver.view(self._parts.subscriber.address)

    # --- the thread ---

    def run(self, stop: threading.Event) -> None:
        """Deal images and run acquisitions until `stop` is set, then close open files."""
        try:
            while not stop.is_set():
                self._step()
        finally:
            self._shut_down()

    def close(self) -> None:
        """Close the sockets (after run() returned)."""
        self._parts.subscriber.close()
        self._parts.link.close()
        self._idle.close()

    def _step(self) -> None:
        life = self._life
        if life.state in HOLDING:
            # Images published after the start wait in the subscriber's queue until the
            # files exist; only the writers' answers are awaited here.
            self._parts.link.wait_for_event(POLL_MS)
        elif life.acquisition is None:
            # Idle: sleep until a message or a command comes (idle_wait.py).
            self._idle.wait()
            self._dealing.drop_idle()
        else:
            self._dealing.pump()
        now = time.monotonic()
        turn = now >= self._next_turn
        if turn:
            self._next_turn = now + TURN_S
        if turn or life.state not in DEALING:
            self._events.handle()
        self._handle_commands()
        if not turn:
            return
        if now >= self._next_probe:
            self._next_probe = now + PROBE_S
            self._parts.link.probe(acquisition_running=life.acquisition is not None)
        life.check_timeouts(now)
        life.publish_progress(now)

    # --- commands ---

    def _handle_commands(self) -> None:
        if self._commands.empty():  # the common case, without raising queue.Empty
            return
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if isinstance(command, StartCommand):
                dropped = self._dealing.discard_queued()
                self._events.orphans.started.add(command.plan.acquisition_id)
                self._life.start(command.plan, dropped)
            elif isinstance(command, StopCommand):
                self._life.stop(command.acquisition_id)
            else:
                self._reconfigure(command.config)

    def _reconfigure(self, config: DaqConfig) -> None:
        parts = self._parts
        if self._life.acquisition is not None:
            log.error("config change while an acquisition runs: ignored (refused earlier)")
            return
        old = parts.config
        parts.config = config
        if (config.ipc_dir, config.writers) != (old.ipc_dir, old.writers):
            parts.link.close()
            parts.link = WriterLink(config.detector_name, config.ipc_dir, config.writers)
            parts.board.set_writer_count(config.writers)
        if config.ipc_dir != old.ipc_dir:
            parts.subscriber.close()
            parts.subscriber = MetadataSubscriber.for_config(config, timeout_ms=POLL_MS)
            self._life.subscriber_replaced()
        self._idle.watch(parts.subscriber, *parts.link.event_sockets)
        log.info("config changed: %d writer(s)", config.writers)

    # --- shutdown ---

    def _shut_down(self) -> None:
        """The service is stopping: close the files of a running acquisition properly."""
        life = self._life
        acquisition = life.acquisition
        if acquisition is None:
            return
        log.warning(
            "acquisition %d: the driver is stopping; closing the files",
            acquisition.plan.acquisition_id,
        )
        life.stop(acquisition.plan.acquisition_id)
        end = time.monotonic() + SHUTDOWN_TIMEOUT_S
        while life.acquisition is not None and time.monotonic() < end:
            self._parts.link.wait_for_event(POLL_MS)
            self._events.handle()
        if life.acquisition is not None:
            log.error(
                "acquisition %d: writers did not confirm closing before the driver stopped",
                acquisition.plan.acquisition_id,
            )
