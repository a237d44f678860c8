"""The running acquisition's life: start, stop, the state moves, saving, failing, finishing,
timeouts and the progress published to the status board.

Owned by the dealing thread (engine.py); ImageDealing and WriterEvents tell it what they
saw (an image dealt, a writer's answer, a writer gone) and it decides where to go next.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from stddaq_common.bus.driver_writer import CloseCommand, CreateCommand
from stddaq_driver.acquisition import Acquisition, AcquisitionPlan
from stddaq_driver.engine_parts import (
    ANSWER_TIMEOUT_S,
    CLEANUP_TIMEOUT_S,
    CREATE_TIMEOUT_S,
    DEALING,
    HOLDING,
    MASTER_TIMEOUT_S,
    WRITER_SILENT_S,
    EngineParts,
)
from stddaq_driver.master_builder import build_master_for, build_master_here
from stddaq_driver.partial_master import (
    master_command,
    note_partial_master,
    partial_master_builder,
    partial_master_command,
    partial_master_due,
)
from stddaq_driver.receiver_watch import ReceiverView, with_receiver_named
from stddaq_driver.state import DaqState
from stddaq_driver.status_board import AcquisitionSnapshot
from stddaq_driver.writer_link import WriterUnreachable

log = logging.getLogger(__name__)


class AcquisitionLife:
    """The acquisition (None while idle), its state and deadline, and every move between
    states."""

    def __init__(
        self,
        parts: EngineParts,
        receiver_view: Callable[[], ReceiverView],
        *,
        maybe_emit_stats: Any = None,
    ) -> None:
        self._parts = parts
        self._receiver_view = receiver_view
        self._maybe_emit_stats = maybe_emit_stats
        self._metadata_seen = 0
        self.acquisition: Acquisition | None = None
        self.state = DaqState.IDLE
        self._deadline: float | None = None
        self._files_pending = False
        self._rate_mark = (time.monotonic(), 0, 0)
        self._subscriber_bad_seen = 0

    def subscriber_replaced(self) -> None:
        """The metadata subscriber was reopened: its bad-message count starts over."""
        self._subscriber_bad_seen = 0

    # --- start and stop ---

    def start(self, plan: AcquisitionPlan, dropped: int) -> None:
        """Begin `plan` (`dropped`: images queued before the start, not taken): send
        CreateFileCommand to every writer and wait for their answers."""
        parts = self._parts
        self.acquisition = Acquisition(plan)
        self.state = DaqState.STARTED
        parts.counters.acquisitions_started.inc()
        log.info(
            "acquisition %d: start (path %s, prefix %s, n_image %s, %d writer(s); %d earlier "
            "image(s) not taken)",
            plan.acquisition_id, plan.path, plan.file_prefix, plan.n_image, plan.n_writers,
            dropped,
        )
        self.move(DaqState.CREATING_FILE)
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
                parts.link.send_create(index, command)
            except WriterUnreachable as error:
                self.fail(str(error))
                return

    def stop(self, acquisition_id: int) -> None:
        """End acquisition `acquisition_id` early, keeping what was written."""
        acquisition = self.acquisition
        if acquisition is None or acquisition.plan.acquisition_id != acquisition_id:
            return
        if self.state not in (HOLDING | DEALING | {DaqState.FILE_CREATED}):
            return
        log.info("acquisition %d: stop requested", acquisition_id)
        holding = self.state in HOLDING
        self.move(DaqState.STOP)
        if not holding:
            self.begin_saving()
        # else: the files are still being created; saving starts once they exist.

    def advance(self) -> None:
        """Move on when every writer has answered what the current state waits for."""
        acquisition = self.acquisition
        if acquisition is None:
            return
        state = self.state
        created = acquisition.all_writers_in("file_created")
        if state is DaqState.CREATING_FILE and created:
            self._files_pending = False
            self._deadline = None
            self.move(DaqState.FILE_CREATED)
            self.move(DaqState.WAITING_FOR_FIRST_IMAGE)
        elif state is DaqState.STOP and self._files_pending and created:
            # A stop that came while the files were being created.
            self._files_pending = False
            self._deadline = None
            self.begin_saving()
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

    def begin_saving(self) -> None:
        """ConfirmLastImageWritten to every writer; each is sent CloseFile once it answered."""
        acquisition = self.acquisition
        assert acquisition is not None
        self.move(DaqState.SAVING_FILE)
        for index in range(acquisition.plan.n_writers):
            try:
                self._parts.link.send_confirm(index, acquisition.plan.acquisition_id)
            except WriterUnreachable as error:
                self.writer_gone(index, error)
                return
        log.info(
            "acquisition %d: %d image(s) dealt, closing the files",
            acquisition.plan.acquisition_id, acquisition.dealer.dealt,
        )

    def send_close(self, index: int, n_images: int) -> None:
        """CloseFile to writer `index`, which holds `n_images` images."""
        acquisition = self.acquisition
        assert acquisition is not None
        command = CloseCommand(acquisition.plan.acquisition_id, n_images)
        try:
            self._parts.link.send_close(index, command)
        except WriterUnreachable as error:
            self.writer_gone(index, error)

    def _send_master(self, acquisition: Acquisition) -> None:
        """The master file is built by a stddaq writer (writer 0 when it is one)."""
        plan = acquisition.plan
        assert plan.master_file is not None
        link = self._parts.link
        builders = [k for k in range(plan.n_writers) if link.style(k) == "stddaq"]
        if not builders:  # std_daq writers only: the driver builds it (as its own user)
            problem = build_master_here(plan.master_file, plan.detector, list(plan.files))
            if problem is None:
                acquisition.master_state = "closed"
                log.info("acquisition %d: built the master file %s", plan.acquisition_id,
                         plan.master_file)
                self.advance()
            else:
                acquisition.master_state = "error"
                self.fail(f"master file {plan.master_file}: {problem}")
            return
        acquisition.master_state = "building"
        self._deadline = time.monotonic() + MASTER_TIMEOUT_S
        command = master_command(acquisition)
        try:
            link.send_master(builders[0], command)
        except WriterUnreachable as error:
            self.fail(str(error))

    def _partial_master(self, acquisition: Acquisition) -> bool:
        """After a lost writer: the master file over what the files hold, marked incomplete
        (partial_master.py). True while a writer builds it (its answer ends the acquisition)."""
        if acquisition.master_state == "building":
            return True
        if not partial_master_due(acquisition):
            return False
        link = self._parts.link
        command = partial_master_command(acquisition)
        builder = partial_master_builder(acquisition, link.style)
        if builder is not None:
            try:
                link.send_master(builder, command)
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

    def writer_gone(self, index: int, error: WriterUnreachable) -> None:
        """Writer `index` did not take a message: its process is gone or stuck. Fail the
        acquisition naming the writer; count only what its file holds for sure and take
        nothing more from it in this acquisition (a restarted process knows nothing of it
        and would answer the close with an error about a file it never had)."""
        self.fail(str(error))
        acquisition = self.acquisition
        if acquisition is None:
            return
        tracker = acquisition.writers[index]
        if not tracker.lost:
            tracker.mark_lost(
                f"{error}; counted: the {tracker.flushed} image(s) its file holds for sure"
            )
        self.advance()

    def fail(self, reason: str) -> None:
        """Go to error with `reason`; close the other writers' files; idle when they did."""
        acquisition = self.acquisition
        assert acquisition is not None
        if self.state is DaqState.ERROR:
            log.error("acquisition %d: also: %s", acquisition.plan.acquisition_id, reason)
            return
        reason = with_receiver_named(reason, self._receiver_view())
        acquisition.error = reason
        log.error("acquisition %d: error: %s", acquisition.plan.acquisition_id, reason)
        self._parts.counters.acquisitions_failed.inc()
        self.move(DaqState.ERROR)
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
                self._parts.link.send_close(tracker.index, command)
            except WriterUnreachable as error:
                log.error("acquisition %d: %s", acquisition.plan.acquisition_id, error)
                tracker.mark_lost(
                    f"{tracker.last_error or error}; counted: the {tracker.flushed} image(s) "
                    "its file holds for sure"
                )
        self.advance()

    def _finish(self) -> None:
        acquisition = self.acquisition
        assert acquisition is not None
        board, counters = self._parts.board, self._parts.counters
        self.publish_progress(time.monotonic())
        failed = self.state is DaqState.ERROR
        if not failed:
            counters.acquisitions_saved.inc()
            self.move(DaqState.FILE_SAVED, outcome="file_saved", finished_at=time.time())
            log.info(
                "acquisition %d: file_saved, %d image(s) written, %d missing",
                acquisition.plan.acquisition_id,
                sum(t.written for t in acquisition.writers),
                acquisition.dealer.id_gaps + sum(t.not_written for t in acquisition.writers),
            )
        snapshot = board.snapshot()
        self.acquisition = None
        self._deadline = None
        self._files_pending = False
        self.state = DaqState.IDLE
        board.move_to(
            replace(
                snapshot,
                state=DaqState.IDLE,
                outcome="error" if failed else "file_saved",
                finished_at=snapshot.finished_at or time.time(),
            )
        )
        counters.state.set(DaqState.IDLE.value)
        log.info(
            "acquisition %d: idle (%s)",
            acquisition.plan.acquisition_id, "error" if failed else "file_saved",
        )

    # --- timeouts and status ---

    def check_timeouts(self, now: float) -> None:
        """Fail (or, in error, finish) when an answer the state waits for is overdue."""
        acquisition = self.acquisition
        if acquisition is None:
            return
        if self.state is DaqState.ERROR:
            if self._deadline is not None and now >= self._deadline:
                self._cleanup_overdue(acquisition)
            return
        if self._deadline is not None and now >= self._deadline:
            if acquisition.master_state == "building":
                self.fail(
                    f"writer 0 did not answer the master message for "
                    f"{acquisition.plan.master_file} within {MASTER_TIMEOUT_S:g} s"
                )
            else:
                late = [t.index for t in acquisition.writers if t.state != "file_created"]
                self.fail(
                    f"writer(s) {late} did not confirm creating the file within "
                    f"{CREATE_TIMEOUT_S:g} s"
                )
            return
        self._check_writers_alive(acquisition, now)

    def _cleanup_overdue(self, acquisition: Acquisition) -> None:
        """In error, the writers' closes (or the partial master file) did not all come."""
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
        self.advance()  # the master file over what was saved (a lost writer), idle

    def _check_writers_alive(self, acquisition: Acquisition, now: float) -> None:
        link = self._parts.link
        for index, age in enumerate(self._parts.board.writer_ages(now)):
            if index >= len(acquisition.writers):
                break
            if acquisition.writers[index].state == "closed":
                continue
            if link.style(index) == "std_daq":
                # No heartbeats: dead when an answer it owes does not come.
                owed = link.owed_since(index)
                if owed is not None and now - owed[0] > ANSWER_TIMEOUT_S:
                    self.fail(
                        f"writer {index} did not answer the {owed[1]} message within "
                        f"{ANSWER_TIMEOUT_S:g} s (is it running?)"
                    )
                    return
                continue
            if age is None or age > WRITER_SILENT_S:
                self.fail(
                    f"writer {index} sent nothing for {WRITER_SILENT_S:g} s (is it running?)"
                )
                return

    def publish_progress(self, now: float) -> None:
        """The acquisition's figures to the status board; rates and stats when due."""
        parts = self._parts
        received = parts.subscriber.received
        if received != self._metadata_seen:  # the receiver published since the last look
            self._metadata_seen = received
            parts.board.metadata_heard(now)
        skipped = parts.subscriber.bad_messages  # multipart or otherwise unusable messages
        if skipped > self._subscriber_bad_seen:
            parts.counters.bad_metadata.inc(skipped - self._subscriber_bad_seen)
            self._subscriber_bad_seen = skipped
        acquisition = self.acquisition
        if acquisition is not None:
            parts.board.update(acquisition.snapshot(parts.board.snapshot()))
        self._update_rates(now)
        if self._maybe_emit_stats is not None:
            self._maybe_emit_stats()

    def _update_rates(self, now: float) -> None:
        mark_time, mark_images, mark_bytes = self._rate_mark
        elapsed = now - mark_time
        if elapsed < 1.0:
            return
        counters = self._parts.counters
        images = counters.images_written.value
        nbytes = counters.bytes_written.value
        counters.write_images_per_s.set((images - mark_images) / elapsed)
        counters.write_throughput_bytes_per_s.set((nbytes - mark_bytes) / elapsed)
        acquisition = self.acquisition
        if acquisition is not None:
            latencies = [
                t.write_latency_s for t in acquisition.writers if t.write_latency_s is not None
            ]
            if latencies:
                counters.write_latency_s.set(sum(latencies) / len(latencies))
        self._rate_mark = (now, images, nbytes)

    def move(self, state: DaqState, **changes: Any) -> None:
        """Store a state change with the acquisition's current figures."""
        acquisition = self.acquisition
        board = self._parts.board
        base: AcquisitionSnapshot = replace(board.snapshot(), state=state, **changes)
        if acquisition is not None:
            base = acquisition.snapshot(base)
        board.move_to(base)
        self.state = state
        self._parts.counters.state.set(state.value)
        log.info(
            "acquisition %d: %s",
            acquisition.plan.acquisition_id if acquisition else 0, state.value,
        )
