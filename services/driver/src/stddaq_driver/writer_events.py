"""What the writers say, applied: progress and answers of the running acquisition, a
writer that restarted, the master file's answer, and (while idle) files that an earlier
driver process left open (orphans.py).

Owned by the dealing thread (engine.py); the moves between states are AcquisitionLife's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace

from stddaq_common.bus.driver_writer import CloseCommand, EventKind, WriterEvent
from stddaq_driver.acquisition import Acquisition, WriterTracker
from stddaq_driver.acquisition_life import AcquisitionLife
from stddaq_driver.engine_parts import CLOSING, EngineParts
from stddaq_driver.orphans import Orphans, orphan_reason
from stddaq_driver.partial_master import note_partial_master
from stddaq_driver.state import DaqState
from stddaq_driver.writer_link import WriterUnreachable

log = logging.getLogger(__name__)


class WriterEvents:
    """Receives the writers' events and applies each to the acquisition or the orphans."""

    def __init__(self, parts: EngineParts, life: AcquisitionLife) -> None:
        self._parts = parts
        self._life = life
        self.orphans = Orphans()

    def handle(self) -> None:
        """Take every event waiting now, apply them, then let the acquisition move on."""
        parts = self._parts
        link = parts.link
        events = link.receive_events()
        bad = link.bad_events
        if bad != parts.counters.writer_bad_events.value:
            parts.counters.writer_bad_events.value = bad
        if not events:
            return
        parts.board.writers_heard({event.writer for event in events}, time.monotonic())
        for event in events:
            self._handle_event(event)
        self._life.advance()

    def _handle_event(self, event: WriterEvent) -> None:
        acquisition = self._life.acquisition
        if acquisition is None:
            self._handle_orphan(event)
        else:
            tracker = acquisition.writers[event.writer]
            if tracker.restarted or tracker.lost:
                return  # gone: its new process knows nothing of this acquisition
            if tracker.restarted_by(event, acquisition.plan.acquisition_id):
                self._writer_restarted(tracker)
                return
        if acquisition is None or event.acq_id != acquisition.plan.acquisition_id:
            if event.event == "error":
                log.warning(
                    "writer %d reported an error outside the running acquisition "
                    "(acq_id %s): %s",
                    event.writer, event.acq_id, event.reason,
                )
            return
        if event.event in (EventKind.HEARTBEAT, EventKind.READY):
            return
        if event.event in ("closed", "error"):
            master = acquisition.plan.master_file
            if master is not None and event.file == master:
                self._master_answered(acquisition, event)
                return
        self._apply(acquisition, event)

    def _apply(self, acquisition: Acquisition, event: WriterEvent) -> None:
        """A writer's figures and answer for the running acquisition."""
        life, counters = self._life, self._parts.counters
        tracker = acquisition.writers[event.writer]
        written, not_written, nbytes = tracker.written, tracker.not_written, tracker.bytes_written
        early_close = event.event == EventKind.CLOSED and life.state not in CLOSING
        if not event.stddaq and event.event in (EventKind.CONFIRMED, EventKind.CLOSED):
            # A std_daq writer reports no figures: it holds what it was dealt.
            event = replace(event, written=acquisition.dealer.per_writer()[event.writer])
        tracker.apply(event)
        counters.images_written.inc(max(0, tracker.written - written))
        counters.images_not_written.inc(max(0, tracker.not_written - not_written))
        counters.bytes_written.inc(max(0, tracker.bytes_written - nbytes))
        if event.event == EventKind.ERROR:
            life.fail(f"writer {event.writer}: {tracker.last_error}")
        elif event.event == EventKind.CONFIRMED and life.state is DaqState.SAVING_FILE:
            life.send_close(tracker.index, acquisition.dealer.per_writer()[tracker.index])
        elif early_close:
            why = f": {event.reason}" if event.reason else ""
            life.fail(f"writer {event.writer} closed its file before it was asked to{why}")

    def _writer_restarted(self, tracker: WriterTracker) -> None:
        """A writer came back as a new process while it had this acquisition's file open."""
        tracker.restarted = True
        tracker.mark_lost(
            "restarted during the acquisition (it crashed or was killed): its file keeps "
            f"the {tracker.flushed} image(s) it had flushed"
        )
        self._life.fail(f"writer {tracker.index} {tracker.last_error}")

    def _master_answered(self, acquisition: Acquisition, event: WriterEvent) -> None:
        if self._life.state is DaqState.ERROR:  # the master file after a lost writer
            closed = event.event == "closed"
            acquisition.master_state = "closed" if closed else "error"
            problem = None if closed else event.reason or "no reason given"
            note_partial_master(acquisition, problem)
            return
        if event.event == "closed":
            acquisition.master_state = "closed"
        else:
            acquisition.master_state = "error"
            reason = event.reason or "no reason given"
            self._life.fail(f"master file {acquisition.plan.master_file}: {reason}")

    def _handle_orphan(self, event: WriterEvent) -> None:
        """While idle: a writer still holding a file of an acquisition that a previous
        driver process ran is asked to close it, and the status says so."""
        acq_id = event.acq_id
        if acq_id is None:
            return
        parts, orphans = self._parts, self.orphans
        if orphans.needs_close(event):
            log.error(
                "writer %d still holds a file of acquisition %d, which an earlier driver "
                "process ran (the driver restarted): closing it",
                event.writer, acq_id,
            )
            if orphans.is_new(acq_id):
                parts.counters.acquisitions_failed.inc()
            command = CloseCommand(acq_id, 0, orphan_reason(acq_id))
            try:
                parts.link.send_close(event.writer, command)
            except WriterUnreachable as error:
                log.error("acquisition %d: %s", acq_id, error)
        elif not orphans.took_close(event):
            return
        snapshot = parts.board.snapshot()
        if snapshot.state is not DaqState.IDLE or snapshot.acquisition_id > acq_id:
            return
        with contextlib.suppress(ValueError):  # a start claimed the board meanwhile
            parts.board.update(
                replace(
                    snapshot,
                    acquisition_id=acq_id,
                    files=orphans.files(acq_id),
                    outcome="error",
                    last_error=orphans.summary(acq_id),
                )
            )
