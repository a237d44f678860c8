"""Decoder threads: slot jobs (decompressions straight into ring slots) run in parallel.

The receive thread starts a job (its slot marked "being written") and submits it; a
worker runs it (bitshuffle/LZ4 in C through ctypes, which releases the GIL, so workers
decompress on several cores at once) and queues the outcome; the receive thread collects
outcomes and publishes in id order. At most `max_in_flight` jobs are submitted and not yet
collected: the receive thread waits for one before submitting more, so a receiver short of
CPU stops taking messages (the camera's PUSH socket then waits) instead of queueing them.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from stddaq_receiver.slot_writer import SlotJob

log = logging.getLogger("stddaq.receiver")


@dataclass(frozen=True, slots=True)
class Outcome:
    """A job that ran: its image's bytes, or the exception it raised."""

    job: SlotJob
    nbytes: int
    error: BaseException | None


class DecodePool:
    """`workers` threads running submitted SlotJobs; outcomes come back through `collect`."""

    def __init__(self, workers: int, max_in_flight: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"a decode pool needs >= 1 worker, got {workers}")
        self.max_in_flight = max_in_flight or 2 * workers
        self._jobs: queue.SimpleQueue[SlotJob | None] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.in_flight = 0
        """Jobs submitted whose outcome has not been collected (read-only for callers)."""
        self._threads = [
            threading.Thread(target=self._work, name=f"decoder-{k}", daemon=True) for k in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def full(self) -> bool:
        """True when no job may be submitted before an outcome is collected."""
        return self.in_flight >= self.max_in_flight

    def submit(self, job: SlotJob) -> None:
        """Queue a job for the workers (the caller keeps within max_in_flight)."""
        self.in_flight += 1
        self._jobs.put(job)

    def collect(self, timeout: float = 0.0) -> list[Outcome]:
        """The outcomes ready now; with `timeout` > 0 wait that long for at least one."""
        outcomes: list[Outcome] = []
        if self.in_flight == 0:
            return outcomes
        source = self._outcomes
        try:
            outcomes.append(source.get(timeout=timeout) if timeout > 0 else source.get_nowait())
            while True:
                outcomes.append(source.get_nowait())
        except queue.Empty:
            pass
        self.in_flight -= len(outcomes)
        return outcomes

    def close(self) -> None:
        """Stop the workers after the jobs already queued (their outcomes are dropped)."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=10.0)
            if thread.is_alive():
                log.warning("decoder thread %s did not stop within 10 s", thread.name)

    def _work(self) -> None:
        jobs, outcomes = self._jobs, self._outcomes
        while (job := jobs.get()) is not None:
            try:
                outcomes.put(Outcome(job, job.run(), None))
            except BaseException as error:  # handed to the receive thread, which counts it
                outcomes.put(Outcome(job, 0, error))
