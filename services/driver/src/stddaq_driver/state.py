"""Acquisition states (std_daq's names) and the transitions the driver may make."""

from __future__ import annotations

from enum import StrEnum


class DaqState(StrEnum):
    """The state of the acquisition, spelled as std_daq's WebSocket protocol spells it."""

    IDLE = "idle"
    STARTED = "started"
    CREATING_FILE = "creating_file"
    FILE_CREATED = "file_created"
    WAITING_FOR_FIRST_IMAGE = "waiting_for_first_image"
    RECORDING = "recording"
    SAVING_FILE = "saving_file"
    FILE_SAVED = "file_saved"
    STOP = "stop"
    ERROR = "error"


class TransitionError(RuntimeError):
    """A state change the state machine does not allow (a driver bug, never user input)."""


_STOPPABLE = frozenset(
    {
        DaqState.STARTED,
        DaqState.CREATING_FILE,
        DaqState.FILE_CREATED,
        DaqState.WAITING_FOR_FIRST_IMAGE,
        DaqState.RECORDING,
    }
)

ALLOWED_TRANSITIONS: dict[DaqState, frozenset[DaqState]] = {
    DaqState.IDLE: frozenset({DaqState.STARTED}),
    DaqState.STARTED: frozenset({DaqState.CREATING_FILE, DaqState.STOP, DaqState.ERROR}),
    DaqState.CREATING_FILE: frozenset({DaqState.FILE_CREATED, DaqState.STOP, DaqState.ERROR}),
    DaqState.FILE_CREATED: frozenset(
        {DaqState.WAITING_FOR_FIRST_IMAGE, DaqState.STOP, DaqState.ERROR}
    ),
    DaqState.WAITING_FOR_FIRST_IMAGE: frozenset(
        {DaqState.RECORDING, DaqState.STOP, DaqState.ERROR}
    ),
    DaqState.RECORDING: frozenset({DaqState.SAVING_FILE, DaqState.STOP, DaqState.ERROR}),
    DaqState.STOP: frozenset({DaqState.SAVING_FILE, DaqState.ERROR}),
    DaqState.SAVING_FILE: frozenset({DaqState.FILE_SAVED, DaqState.ERROR}),
    DaqState.FILE_SAVED: frozenset({DaqState.IDLE}),
    DaqState.ERROR: frozenset({DaqState.IDLE}),
}
"""Every state change the driver makes; anything else is a bug and raises TransitionError."""


def can_move(current: DaqState, target: DaqState) -> bool:
    """True if the state machine allows going from `current` to `target`."""
    return target in ALLOWED_TRANSITIONS[current]


def check_move(current: DaqState, target: DaqState) -> None:
    """Raise TransitionError unless `current` -> `target` is allowed."""
    if not can_move(current, target):
        raise TransitionError(f"state change {current} -> {target} is not allowed")


def is_stoppable(state: DaqState) -> bool:
    """True while a stop request can still end the acquisition early."""
    return state in _STOPPABLE


def accepts_start(state: DaqState) -> bool:
    """True only when idle: every other state belongs to a running acquisition."""
    return state is DaqState.IDLE
