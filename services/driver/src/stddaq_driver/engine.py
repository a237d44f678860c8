"""The image-dealing thread: receives metadata, deals images to writers, runs the states.

One thread owns every ZeroMQ socket of the driver (the metadata subscriber and the writer
link). The web layer talks to it only through `submit()` (a queue) and the StatusBoard.
Per image the work is: receive the raw metadata bytes, read the id, send the same bytes on
to one writer. Writer events, commands and timeouts are looked at between batches, at
least every POLL_MS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from stddaq_common.bus.driver_writer import (
    CloseCommand,
    CreateCommand,
    EventKind,
    MasterCommand,
    WriterEvent,
)
from stddaq_common.bus.metadata import MetadataError
from stddaq_common.bus.metadata_stream import MetadataSubscriber
from stddaq_common.config.model import DaqConfig
from stddaq_common.rate_limited_log import RateLimitedLog
from stddaq_driver.acquisition import (
    Acquisition,
    AcquisitionPlan,
    IdsWentBackwards,
    WriterTracker,
    images_per_writer,
)
from stddaq_driver.driver_stats import EngineCounters
from stddaq_driver.idle_wait import IdleWait
from stddaq_driver.image_ids import image_id_of
from stddaq_driver.master_builder import build_master_for, build_master_here
from stddaq_driver.orphans import Orphans, orphan_reason
from stddaq_driver.partial_master import (
    note_partial_master,
    partial_master_builder,
    partial_master_command,
    partial_master_due,
)
from stddaq_driver.receiver_watch import ReceiverView, ReceiverWatch, with_receiver_named
from stddaq_driver.state import DaqState
from stddaq_driver.status_board import AcquisitionSnapshot, StatusBoard
from stddaq_driver.writer_link import WriterLink, WriterUnreachable

log = logging.getLogger(__name__)

POLL_MS = 20
"""Longest wait for a message before commands, events and timeouts are looked at."""
BATCH_S = 0.02
"""Longest time spent dealing images before looking at commands and events."""
PUBLISH_S = 0.1
"""Progress figures go to the status board this often."""
CREATE_TIMEOUT_S = 10.0
WRITER_SILENT_S = 10.0
"""A writer that sends nothing for this long during an acquisition is taken for dead."""
ANSWER_TIMEOUT_S = 10.0
"""A std_daq writer (no heartbeats) that owes an answer this long is taken for dead."""
PROBE_S = 0.5
"""Liveness probes (ConfirmLastImageWritten marked as probe) go out this often."""
CLEANUP_TIMEOUT_S = 10.0
MASTER_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 5.0
_LOG_INTERVAL_S = 5.0

_DEALING = frozenset({DaqState.WAITING_FOR_FIRST_IMAGE, DaqState.RECORDING})
_HOLDING = frozenset({DaqState.STARTED, DaqState.CREATING_FILE})
_CLOSING = frozenset({DaqState.SAVING_FILE, DaqState.ERROR})


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
    """Owns the sockets and the running acquisition; `run()` is the thread's body."""

    def __init__(
        self,
        config: DaqConfig,
        board: StatusBoard,
        counters: EngineCounters,
        *,
        maybe_emit_stats: Any = None,
    ) -> None:
        self._config = config
        self._board = board
        self._counters = counters
        self._maybe_emit_stats = maybe_emit_stats
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._link = WriterLink(config.detector_name, config.ipc_dir, config.writers)
        try:
            self._subscriber = MetadataSubscriber.for_config(config, timeout_ms=POLL_MS)
        except Exception:
            self._link.close()
            raise
        self._acquisition: Acquisition | None = None
        self._state = DaqState.IDLE
        self._deadline: float | None = None
        self._files_pending = False
        self._next_publish = 0.0
        self._next_probe = 0.0
        self._rate_mark = (time.monotonic(), 0, 0)
        self._subscriber_bad_seen = 0
        self._warnings = RateLimitedLog(log, _LOG_INTERVAL_S)
        self._orphans = Orphans()
        self._idle = IdleWait()
        self._idle.watch(self._subscriber.socket, *self._link.event_sockets)
        self.receiver = ReceiverWatch()
        """Is the receiver running (on demand: status, health, an acquisition error)."""
        self._metadata_seen = 0

    # --- called from other threads ---

    def submit(self, command: Command) -> None:
        """Queue a command for the dealing thread (thread-safe, never blocks)."""
        self._commands.put(command)
        self._idle.wake()

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
        self._subscriber.close()
        self._link.close()
        self._idle.close()

    def _step(self) -> None:
        if self._state in _HOLDING:
            # Images published after the start wait in the subscriber's queue until the
            # files exist; only the writers' answers are awaited here.
            self._link.wait_for_event(POLL_MS)
        elif self._acquisition is None:
            # Idle: sleep until a message or a command comes (idle_wait.py).
            self._idle.wait()
            self._drop_idle_images()
        else:
            self._pump_images()
        self._handle_events()
        self._handle_commands()
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + PROBE_S
            self._link.probe(acquisition_running=self._acquisition is not None)
        self._check_timeouts(now)
        if now >= self._next_publish:
            self._next_publish = now + PUBLISH_S
            self._publish_progress(now)

    # --- images ---

    def _pump_images(self) -> None:
        subscriber = self._subscriber
        end = time.monotonic() + BATCH_S
        while True:
            raw = subscriber.receive_raw()
            if raw is None:
                return
            if self._state in _DEALING:
                self._deal(raw)
            if time.monotonic() >= end:
                return

    def _deal(self, raw: bytes) -> None:
        acquisition = self._acquisition
        assert acquisition is not None
        try:
            image_id = image_id_of(raw)
        except MetadataError as error:
            self._counters.bad_metadata.inc()
            self._warnings.warning("bad metadata", "skipped metadata without a readable id: %s", error)
            return
        dealer = acquisition.dealer
        gaps_before = dealer.id_gaps
        try:
            dealt = dealer.deal(image_id)
        except IdsWentBackwards as error:
            self._fail(str(error))
            return
        if dealt is None:
            self._counters.repeated_ids.inc()
            self._warnings.warning("repeated id", "skipped image %d: its id repeated", image_id)
            return
        writer, position = dealt
        try:
            self._link.send_image(writer, acquisition.plan.acquisition_id, position, raw)
        except WriterUnreachable as error:
            self._writer_gone(writer, error)
            return
        self._counters.images_dealt.inc()
        if dealer.id_gaps != gaps_before:
            self._counters.id_gaps.inc(dealer.id_gaps - gaps_before)
        if self._state is DaqState.WAITING_FOR_FIRST_IMAGE:
            self._move(DaqState.RECORDING)
        if dealer.is_complete:
            self._begin_saving()

    def _drop_idle_images(self) -> None:
        """While idle: drop the metadata that came (no acquisition takes it)."""
        end = time.monotonic() + BATCH_S
        while self._subscriber.receive_raw(0) is not None and time.monotonic() < end:
            pass

    def _discard_queued_images(self) -> int:
        """Drop the metadata queued before the start: those images came before it."""
        dropped = 0
        while self._subscriber.receive_raw(0) is not None:
            dropped += 1
        return dropped

    # --- commands ---

    def _handle_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if isinstance(command, StartCommand):
                self._start(command.plan)
            elif isinstance(command, StopCommand):
                self._stop(command.acquisition_id)
            else:
                self._reconfigure(command.config)

    def _start(self, plan: AcquisitionPlan) -> None:
        dropped = self._discard_queued_images()
        self._acquisition = Acquisition(plan)
        self._orphans.started.add(plan.acquisition_id)
        self._state = DaqState.STARTED
        self._counters.acquisitions_started.inc()
        log.info(
            "acquisition %d: start (path %s, prefix %s, n_image %s, %d writer(s); %d earlier "
            "image(s) not taken)",
            plan.acquisition_id, plan.path, plan.file_prefix, plan.n_image, plan.n_writers,
            dropped,
        )
        self._move(DaqState.CREATING_FILE)
        self._files_pending = True
        self._deadline = time.monotonic() + CREATE_TIMEOUT_S
        for index, file in enumerate(plan.files):
            command = CreateCommand(
                path=os.path.join(plan.path, plan.file_prefix),  # std_daq: <path><k>.h5
                uid=plan.uid,
                acq_id=plan.acquisition_id,
                file=file,
                compression=plan.compression,  # type: ignore[arg-type]
                writer_index=index,
                n_writers=plan.n_writers,
                params=plan.params,
                config=plan.config,
            )
            try:
                self._link.send_create(index, command)
            except WriterUnreachable as error:
                self._fail(str(error))
                return

    def _stop(self, acquisition_id: int) -> None:
        acquisition = self._acquisition
        if acquisition is None or acquisition.plan.acquisition_id != acquisition_id:
            return
        if self._state not in (_HOLDING | _DEALING | {DaqState.FILE_CREATED}):
            return
        log.info("acquisition %d: stop requested", acquisition_id)
        holding = self._state in _HOLDING
        self._move(DaqState.STOP)
        if not holding:
            self._begin_saving()
        # else: the files are still being created; saving starts once they exist.

    def _reconfigure(self, config: DaqConfig) -> None:
        if self._acquisition is not None:
            log.error("config change while an acquisition runs: ignored (refused earlier)")
            return
        old = self._config
        self._config = config
        if (config.ipc_dir, config.writers) != (old.ipc_dir, old.writers):
            self._link.close()
            self._link = WriterLink(config.detector_name, config.ipc_dir, config.writers)
            self._board.set_writer_count(config.writers)
        if config.ipc_dir != old.ipc_dir:
            self._subscriber.close()
            self._subscriber = MetadataSubscriber.for_config(config, timeout_ms=POLL_MS)
            self._subscriber_bad_seen = 0
        self._idle.watch(self._subscriber.socket, *self._link.event_sockets)
        log.info("config changed: %d writer(s)", config.writers)

    # --- writer events ---

    def _handle_events(self) -> None:
        events = self._link.receive_events()
        bad = self._link.bad_events
        if bad != self._counters.writer_bad_events.value:
            self._counters.writer_bad_events.value = bad
        if not events:
            return
        now = time.monotonic()
        for event in events:
            self._board.writer_heard(event.writer, now)
            self._handle_event(event)
        self._advance()

    def _handle_event(self, event: WriterEvent) -> None:
        acquisition = self._acquisition
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
        master = acquisition.plan.master_file
        if master is not None and event.file == master and event.event in ("closed", "error"):
            self._master_answered(event)
            return
        tracker = acquisition.writers[event.writer]
        written, not_written, nbytes = tracker.written, tracker.not_written, tracker.bytes_written
        early_close = event.event == EventKind.CLOSED and self._state not in _CLOSING
        if not event.stddaq and event.event in (EventKind.CONFIRMED, EventKind.CLOSED):
            # A std_daq writer reports no figures: it holds what it was dealt.
            event = replace(event, written=acquisition.dealer.per_writer()[event.writer])
        tracker.apply(event)
        self._counters.images_written.inc(max(0, tracker.written - written))
        self._counters.images_not_written.inc(max(0, tracker.not_written - not_written))
        self._counters.bytes_written.inc(max(0, tracker.bytes_written - nbytes))
        if event.event == EventKind.ERROR:
            self._fail(f"writer {event.writer}: {tracker.last_error}")
        elif event.event == EventKind.CONFIRMED and self._state is DaqState.SAVING_FILE:
            self._send_close(tracker.index, acquisition.dealer.per_writer()[tracker.index])
        elif early_close:
            why = f": {event.reason}" if event.reason else ""
            self._fail(f"writer {event.writer} closed its file before it was asked to{why}")

    def _writer_restarted(self, tracker: WriterTracker) -> None:
        """A writer came back as a new process while it had this acquisition's file open."""
        tracker.restarted = True
        tracker.mark_lost(
            "restarted during the acquisition (it crashed or was killed): its file keeps "
            f"the {tracker.flushed} image(s) it had flushed"
        )
        self._fail(f"writer {tracker.index} {tracker.last_error}")

    def _handle_orphan(self, event: WriterEvent) -> None:
        """While idle: a writer still holding a file of an acquisition that a previous
        driver process ran is asked to close it, and the status says so."""
        acq_id = event.acq_id
        if acq_id is None:
            return
        if self._orphans.needs_close(event):
            log.error(
                "writer %d still holds a file of acquisition %d, which an earlier driver "
                "process ran (the driver restarted): closing it",
                event.writer, acq_id,
            )
            if self._orphans.is_new(acq_id):
                self._counters.acquisitions_failed.inc()
            command = CloseCommand(acq_id, 0, orphan_reason(acq_id))
            try:
                self._link.send_close(event.writer, command)
            except WriterUnreachable as error:
                log.error("acquisition %d: %s", acq_id, error)
        elif not self._orphans.took_close(event):
            return
        snapshot = self._board.snapshot()
        if snapshot.state is not DaqState.IDLE or snapshot.acquisition_id > acq_id:
            return
        with contextlib.suppress(ValueError):  # a start claimed the board meanwhile
            self._board.update(
                replace(
                    snapshot,
                    acquisition_id=acq_id,
                    files=self._orphans.files(acq_id),
                    outcome="error",
                    last_error=self._orphans.summary(acq_id),
                )
            )

    def _master_answered(self, event: WriterEvent) -> None:
        acquisition = self._acquisition
        assert acquisition is not None
        if self._state is DaqState.ERROR:  # the master file after a lost writer
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
            self._fail(f"master file {acquisition.plan.master_file}: {reason}")

    def _advance(self) -> None:
        """Move on when every writer has answered what the current state waits for."""
        acquisition = self._acquisition
        if acquisition is None:
            return
        state = self._state
        created = acquisition.all_writers_in("file_created")
        if state is DaqState.CREATING_FILE and created:
            self._files_pending = False
            self._deadline = None
            self._move(DaqState.FILE_CREATED)
            self._move(DaqState.WAITING_FOR_FIRST_IMAGE)
        elif state is DaqState.STOP and self._files_pending and created:
            # A stop that came while the files were being created.
            self._files_pending = False
            self._deadline = None
            self._begin_saving()
        elif state is DaqState.SAVING_FILE and acquisition.all_writers_in("closed"):
            if acquisition.plan.master_file is None or acquisition.master_state == "closed":
                self._finish()
            elif acquisition.master_state is None:
                self._send_master(acquisition)
        elif (
            state is DaqState.ERROR
            and acquisition.all_writers_in("closed", "error")
            and not self._partial_master(acquisition)  # after a lost writer: partial_master.py
        ):
            self._finish()

    # --- saving, failing, finishing ---

    def _begin_saving(self) -> None:
        """ConfirmLastImageWritten to every writer; each is sent CloseFile once it answered."""
        acquisition = self._acquisition
        assert acquisition is not None
        self._move(DaqState.SAVING_FILE)
        for index in range(acquisition.plan.n_writers):
            try:
                self._link.send_confirm(index, acquisition.plan.acquisition_id)
            except WriterUnreachable as error:
                self._writer_gone(index, error)
                return
        log.info(
            "acquisition %d: %d image(s) dealt, closing the files",
            acquisition.plan.acquisition_id, acquisition.dealer.dealt,
        )

    def _send_close(self, index: int, n_images: int) -> None:
        acquisition = self._acquisition
        assert acquisition is not None
        try:
            self._link.send_close(index, CloseCommand(acquisition.plan.acquisition_id, n_images))
        except WriterUnreachable as error:
            self._writer_gone(index, error)

    def _send_master(self, acquisition: Acquisition) -> None:
        """The master file is built by a stddaq writer (writer 0 when it is one)."""
        plan = acquisition.plan
        assert plan.master_file is not None
        builders = [k for k in range(plan.n_writers) if self._link.style(k) == "stddaq"]
        if not builders:  # std_daq writers only: the driver builds it (as its own user)
            problem = build_master_here(plan.master_file, plan.detector, list(plan.files))
            if problem is None:
                acquisition.master_state = "closed"
                log.info("acquisition %d: built the master file %s", plan.acquisition_id,
                         plan.master_file)
                self._advance()
            else:
                acquisition.master_state = "error"
                self._fail(f"master file {plan.master_file}: {problem}")
            return
        acquisition.master_state = "building"
        self._deadline = time.monotonic() + MASTER_TIMEOUT_S
        command = MasterCommand(
            acq_id=plan.acquisition_id,
            file=plan.master_file,
            files=list(plan.files),
            detector=plan.detector,
            n_images=acquisition.dealer.dealt,
            images_per_file=images_per_writer(acquisition.dealer.dealt, plan.n_writers),
        )
        try:
            self._link.send_master(builders[0], command)
        except WriterUnreachable as error:
            self._fail(str(error))

    def _partial_master(self, acquisition: Acquisition) -> bool:
        """After a lost writer: the master file over what the files hold, marked incomplete
        (partial_master.py). True while a writer builds it (its answer ends the acquisition)."""
        if acquisition.master_state == "building":
            return True
        if not partial_master_due(acquisition):
            return False
        command = partial_master_command(acquisition)
        builder = partial_master_builder(acquisition, self._link.style)
        if builder is not None:
            try:
                self._link.send_master(builder, command)
            except WriterUnreachable as error:
                log.error("acquisition %d: %s", command.acq_id, error)
            else:
                acquisition.master_state = "building"
                self._deadline = time.monotonic() + MASTER_TIMEOUT_S
                return True
        problem = build_master_for(command)  # no stddaq writer can: the driver builds it
        acquisition.master_state = "closed" if problem is None else "error"
        note_partial_master(acquisition, problem)
        return False

    def _writer_gone(self, index: int, error: WriterUnreachable) -> None:
        """Writer `index` did not take a message: its process is gone or stuck. Fail the
        acquisition naming the writer; count only what its file holds for sure and take
        nothing more from it in this acquisition (a restarted process knows nothing of it
        and would answer the close with an error about a file it never had)."""
        self._fail(str(error))
        acquisition = self._acquisition
        if acquisition is None:
            return
        tracker = acquisition.writers[index]
        if not tracker.lost:
            tracker.mark_lost(
                f"{error}; counted: the {tracker.flushed} image(s) its file holds for sure"
            )
        self._advance()

    def _fail(self, reason: str) -> None:
        """Go to error with `reason`; close the other writers' files; idle when they did."""
        acquisition = self._acquisition
        assert acquisition is not None
        if self._state is DaqState.ERROR:
            log.error("acquisition %d: also: %s", acquisition.plan.acquisition_id, reason)
            return
        reason = with_receiver_named(reason, self.receiver_view())
        acquisition.error = reason
        log.error("acquisition %d: error: %s", acquisition.plan.acquisition_id, reason)
        self._counters.acquisitions_failed.inc()
        self._move(DaqState.ERROR)
        self._deadline = time.monotonic() + CLEANUP_TIMEOUT_S
        counts = acquisition.dealer.per_writer()
        for tracker in acquisition.writers:
            if tracker.state in ("closed", "error"):
                continue
            command = CloseCommand(
                acquisition.plan.acquisition_id,
                counts[tracker.index],
                f"the acquisition ended in error: {reason}",
            )
            try:
                self._link.send_close(tracker.index, command)
            except WriterUnreachable as error:
                log.error("acquisition %d: %s", acquisition.plan.acquisition_id, error)
                tracker.mark_lost(
                    f"{tracker.last_error or error}; counted: the {tracker.flushed} image(s) "
                    "its file holds for sure"
                )
        self._advance()

    def _finish(self) -> None:
        acquisition = self._acquisition
        assert acquisition is not None
        self._publish_progress(time.monotonic())
        failed = self._state is DaqState.ERROR
        if not failed:
            self._counters.acquisitions_saved.inc()
            self._move(DaqState.FILE_SAVED, outcome="file_saved", finished_at=time.time())
            log.info(
                "acquisition %d: file_saved, %d image(s) written, %d missing",
                acquisition.plan.acquisition_id,
                sum(t.written for t in acquisition.writers),
                acquisition.dealer.id_gaps + sum(t.not_written for t in acquisition.writers),
            )
        snapshot = self._board.snapshot()
        self._acquisition = None
        self._deadline = None
        self._files_pending = False
        self._state = DaqState.IDLE
        self._board.move_to(
            replace(
                snapshot,
                state=DaqState.IDLE,
                outcome="error" if failed else "file_saved",
                finished_at=snapshot.finished_at or time.time(),
            )
        )
        self._counters.state.set(DaqState.IDLE.value)
        log.info(
            "acquisition %d: idle (%s)",
            acquisition.plan.acquisition_id, "error" if failed else "file_saved",
        )

    # --- timeouts and status ---

    def _check_timeouts(self, now: float) -> None:
        acquisition = self._acquisition
        if acquisition is None:
            return
        state = self._state
        if state is DaqState.ERROR:
            if self._deadline is not None and now >= self._deadline:
                silent = [t for t in acquisition.writers if t.state not in ("closed", "error")]
                if silent:
                    log.error(
                        "acquisition %d: writer(s) %s did not confirm closing within %g s",
                        acquisition.plan.acquisition_id, [t.index for t in silent],
                        CLEANUP_TIMEOUT_S,
                    )
                elif acquisition.master_state == "building":
                    acquisition.master_state = "error"
                    note_partial_master(
                        acquisition, f"its writer did not answer within {MASTER_TIMEOUT_S:g} s"
                    )
                for tracker in silent:
                    tracker.mark_lost(
                        f"did not confirm closing within {CLEANUP_TIMEOUT_S:g} s; counted: the "
                        f"{tracker.flushed} image(s) its file holds for sure"
                    )
                self._advance()  # the master file over what was saved (a lost writer), idle
            return
        if self._deadline is not None and now >= self._deadline:
            if acquisition.master_state == "building":
                self._fail(
                    f"writer 0 did not answer the master message for "
                    f"{acquisition.plan.master_file} within {MASTER_TIMEOUT_S:g} s"
                )
            else:
                late = [t.index for t in acquisition.writers if t.state != "file_created"]
                self._fail(
                    f"writer(s) {late} did not confirm creating the file within "
                    f"{CREATE_TIMEOUT_S:g} s"
                )
            return
        for index, age in enumerate(self._board.writer_ages(now)):
            if index >= len(acquisition.writers):
                break
            if acquisition.writers[index].state == "closed":
                continue
            if self._link.style(index) == "std_daq":
                # No heartbeats: dead when an answer it owes does not come.
                owed = self._link.owed_since(index)
                if owed is not None and now - owed[0] > ANSWER_TIMEOUT_S:
                    self._fail(
                        f"writer {index} did not answer the {owed[1]} message within "
                        f"{ANSWER_TIMEOUT_S:g} s (is it running?)"
                    )
                    return
                continue
            if age is None or age > WRITER_SILENT_S:
                self._fail(
                    f"writer {index} sent nothing for {WRITER_SILENT_S:g} s (is it running?)"
                )
                return

    def receiver_view(self) -> ReceiverView:
        """Whether a process serves the receiver's metadata socket (thread-safe, cached 1 s)."""
        return self.receiver.view(self._subscriber.address)

    def _publish_progress(self, now: float) -> None:
        received = self._subscriber.received
        if received != self._metadata_seen:  # the receiver published since the last look
            self._metadata_seen = received
            self._board.metadata_heard(now)
        skipped = self._subscriber.bad_messages  # multipart or otherwise unusable messages
        if skipped > self._subscriber_bad_seen:
            self._counters.bad_metadata.inc(skipped - self._subscriber_bad_seen)
            self._subscriber_bad_seen = skipped
        acquisition = self._acquisition
        if acquisition is not None:
            self._board.update(acquisition.snapshot(self._board.snapshot()))
        self._update_rates(now)
        if self._maybe_emit_stats is not None:
            self._maybe_emit_stats()

    def _update_rates(self, now: float) -> None:
        mark_time, mark_images, mark_bytes = self._rate_mark
        elapsed = now - mark_time
        if elapsed < 1.0:
            return
        images = self._counters.images_written.value
        nbytes = self._counters.bytes_written.value
        self._counters.write_images_per_s.set((images - mark_images) / elapsed)
        self._counters.write_throughput_bytes_per_s.set((nbytes - mark_bytes) / elapsed)
        acquisition = self._acquisition
        if acquisition is not None:
            latencies = [
                t.write_latency_s for t in acquisition.writers if t.write_latency_s is not None
            ]
            if latencies:
                self._counters.write_latency_s.set(sum(latencies) / len(latencies))
        self._rate_mark = (now, images, nbytes)

    def _move(self, state: DaqState, **changes: Any) -> None:
        """Store a state change with the acquisition's current figures."""
        acquisition = self._acquisition
        base: AcquisitionSnapshot = replace(self._board.snapshot(), state=state, **changes)
        if acquisition is not None:
            base = acquisition.snapshot(base)
        self._board.move_to(base)
        self._state = state
        self._counters.state.set(state.value)
        log.info(
            "acquisition %d: %s",
            acquisition.plan.acquisition_id if acquisition else 0, state.value,
        )

    # --- shutdown ---

    def _shut_down(self) -> None:
        """The service is stopping: close the files of a running acquisition properly."""
        acquisition = self._acquisition
        if acquisition is None:
            return
        log.warning(
            "acquisition %d: the driver is stopping; closing the files",
            acquisition.plan.acquisition_id,
        )
        self._stop(acquisition.plan.acquisition_id)
        end = time.monotonic() + SHUTDOWN_TIMEOUT_S
        while self._acquisition is not None and time.monotonic() < end:
            self._link.wait_for_event(POLL_MS)
            self._handle_events()
        if self._acquisition is not None:
            log.error(
                "acquisition %d: writers did not confirm closing before the driver stopped",
                acquisition.plan.acquisition_id,
            )
