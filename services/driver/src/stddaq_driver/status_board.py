"""The one thread-safe object the web layer and the image-dealing thread share.

The dealing thread publishes snapshots of the acquisition (at state changes and a few
times a second); the web layer reads them, and claims the start of a new acquisition
through `begin`, which is atomic with the busy check. Every state change is kept in a
short history, so that WebSocket clients are sent each state even when states follow
each other within milliseconds (file_saved -> idle).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from stddaq_driver.state import DaqState, accepts_start, check_move

HISTORY_LENGTH = 256
WRITER_ALIVE_S = 3.0
"""A writer is alive if a message from it arrived within this many seconds."""


@dataclass(frozen=True, slots=True)
class WriterSnapshot:
    """The driver's view of one writer in the current acquisition."""

    index: int
    state: str = "unknown"
    images_written: int = 0
    images_not_written: int = 0
    bytes_written: int = 0
    images_flushed: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class AcquisitionSnapshot:
    """Everything the status shows, as of one moment (immutable: safe to hand out)."""

    state: DaqState = DaqState.IDLE
    acquisition_id: int = 0
    path: str | None = None
    file_prefix: str | None = None
    n_image: int | None = None
    compression: str | None = None
    files: tuple[str, ...] = ()
    master_file: str | None = None
    images_dealt: int = 0
    images_written: int = 0
    id_gaps: int = 0
    images_not_written: int = 0
    missing_ids: tuple[int, ...] = ()
    first_image_id: int | None = None
    last_image_id: int | None = None
    bytes_written: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    outcome: str | None = None
    last_error: str | None = None
    writers: tuple[WriterSnapshot, ...] = field(default_factory=tuple)

    @property
    def images_missing(self) -> int:
        """Ids never published plus images a writer could not write."""
        return self.id_gaps + self.images_not_written


class Busy(Exception):
    """A start while an acquisition is running (or its files are still closing)."""

    def __init__(self, state: DaqState) -> None:
        self.state = state
        super().__init__(
            f"an acquisition is running (state {state}); stop it or wait until it is idle"
        )


class StatusBoard:
    """Current snapshot, state-change history and writer liveness, behind one lock."""

    def __init__(self, n_writers: int) -> None:
        self._lock = threading.Lock()
        self._snapshot = AcquisitionSnapshot(writers=_fresh_writers(n_writers))
        self._version = 0
        self._history: deque[tuple[int, AcquisitionSnapshot]] = deque(maxlen=HISTORY_LENGTH)
        self._last_heard: dict[int, float] = {}
        self._metadata_heard: float | None = None
        self._listeners: list[Callable[[], None]] = []
        self._n_writers = n_writers

    # --- readers (any thread) ---

    def snapshot(self) -> AcquisitionSnapshot:
        """The current snapshot."""
        with self._lock:
            return self._snapshot

    @property
    def version(self) -> int:
        """Grows by one at every state change."""
        with self._lock:
            return self._version

    def changes_since(self, version: int) -> tuple[int, list[AcquisitionSnapshot]]:
        """The current version and the snapshot of every state change after `version`
        (the oldest ones are dropped if more than the history length happened)."""
        with self._lock:
            changes = [snap for number, snap in self._history if number > version]
            return self._version, changes

    def writer_ages(self, now: float | None = None) -> list[float | None]:
        """Seconds since each writer was last heard from (None: never)."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            return [
                None if k not in self._last_heard else moment - self._last_heard[k]
                for k in range(self._n_writers)
            ]

    def metadata_age(self, now: float | None = None) -> float | None:
        """Seconds since the driver last got image metadata from the receiver (None: never)."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            heard = self._metadata_heard
        return None if heard is None else moment - heard

    def metadata_heard(self, now: float | None = None) -> None:
        """Image metadata arrived (seen at most PUBLISH_S late)."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            self._metadata_heard = moment

    def silent_writers(self, now: float | None = None) -> list[int]:
        """Writers not heard from within WRITER_ALIVE_S seconds."""
        return [
            k
            for k, age in enumerate(self.writer_ages(now))
            if age is None or age > WRITER_ALIVE_S
        ]

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` (from the changing thread) after every state change."""
        with self._lock:
            self._listeners.append(listener)

    # --- writers of the snapshot ---

    def begin(self, snapshot: AcquisitionSnapshot) -> AcquisitionSnapshot:
        """Claim a new acquisition: only when idle (else raise Busy). `snapshot` must be in
        state `started`; its acquisition_id is assigned here. Returns the stored snapshot."""
        with self._lock:
            current = self._snapshot.state
            if not accepts_start(current):
                raise Busy(current)
            check_move(current, snapshot.state)
            stored = replace(snapshot, acquisition_id=self._snapshot.acquisition_id + 1)
            self._store_change(stored)
            listeners = list(self._listeners)
        _notify(listeners)
        return stored

    def move_to(self, snapshot: AcquisitionSnapshot) -> None:
        """Store `snapshot`, whose state must be an allowed successor of the current one."""
        with self._lock:
            check_move(self._snapshot.state, snapshot.state)
            self._store_change(snapshot)
            listeners = list(self._listeners)
        _notify(listeners)

    def update(self, snapshot: AcquisitionSnapshot) -> None:
        """Store new progress figures in the same state (no history entry, no notice)."""
        with self._lock:
            if snapshot.state is not self._snapshot.state:
                raise ValueError(
                    f"update() keeps the state ({self._snapshot.state}); use move_to() for "
                    f"{snapshot.state}"
                )
            self._snapshot = snapshot

    def set_writer_count(self, n_writers: int) -> None:
        """A new number of writers (config change while idle)."""
        with self._lock:
            self._n_writers = n_writers
            self._last_heard = {k: t for k, t in self._last_heard.items() if k < n_writers}
            self._snapshot = replace(self._snapshot, writers=_fresh_writers(n_writers))

    def writer_heard(self, index: int, now: float | None = None) -> None:
        """Writer `index` sent a message just now."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            self._last_heard[index] = moment

    def writers_heard(self, indices: Iterable[int], now: float | None = None) -> None:
        """Writers `indices` sent messages just now (one lock for all of them)."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            for index in indices:
                self._last_heard[index] = moment

    def _store_change(self, snapshot: AcquisitionSnapshot) -> None:
        self._snapshot = snapshot
        self._version += 1
        self._history.append((self._version, snapshot))


def _fresh_writers(n_writers: int) -> tuple[WriterSnapshot, ...]:
    return tuple(WriterSnapshot(index=k) for k in range(n_writers))


def _notify(listeners: list[Callable[[], None]]) -> None:
    for listener in listeners:
        listener()
