"""The master file of an acquisition that lost a writer: over what the files hold, marked
incomplete.

When a writer is lost mid-acquisition (killed, crashed, restarted, unreachable) the
acquisition ends in `error`; once every writer has closed its file or is gone, a stddaq
writer that closed its file normally (else the driver itself) builds the master file over
what the files hold, with the acquisition's error as its `incomplete_reason`
(stddaq_common.hdf5.master_file). Pure decisions, no sockets: the engine sends the message.
"""

from __future__ import annotations

from collections.abc import Callable

from stddaq_common.bus.driver_writer import MasterCommand
from stddaq_driver.acquisition import Acquisition, images_per_writer


def partial_master_due(acquisition: Acquisition) -> bool:
    """True when the failed acquisition should still get a master file: more than one
    writer, a writer was lost, images were dealt, and no master file was asked for yet."""
    return (
        acquisition.plan.master_file is not None
        and acquisition.master_state is None
        and acquisition.dealer.dealt > 0
        and any(tracker.lost for tracker in acquisition.writers)
    )


def partial_master_builder(acquisition: Acquisition, style_of: Callable[[int], str]) -> int | None:
    """The writer to build it: the first stddaq writer that closed its file (None: the
    driver builds it itself)."""
    for tracker in acquisition.writers:
        if not tracker.lost and tracker.state == "closed" and style_of(tracker.index) == "stddaq":
            return tracker.index
    return None


def incomplete_reason(acquisition: Acquisition) -> str:
    """Why the master file is incomplete: the acquisition's error (it names the writer)."""
    return acquisition.error or "a writer was lost during the acquisition"


def master_command(acquisition: Acquisition, incomplete: str = "") -> MasterCommand:
    """The master-file message of `acquisition` (`incomplete`: why it is marked incomplete)."""
    plan = acquisition.plan
    assert plan.master_file is not None
    return MasterCommand(
        acq_id=plan.acquisition_id,
        file=plan.master_file,
        files=list(plan.files),
        detector=plan.detector,
        n_images=acquisition.dealer.dealt,
        images_per_file=images_per_writer(acquisition.dealer.dealt, plan.n_writers),
        incomplete_reason=incomplete,
    )


def partial_master_command(acquisition: Acquisition) -> MasterCommand:
    """The master-file message of the failed acquisition."""
    return master_command(acquisition, incomplete_reason(acquisition))


def note_partial_master(acquisition: Acquisition, problem: str | None) -> None:
    """Add what became of the master file to the acquisition's error (the status shows it)."""
    master = acquisition.plan.master_file
    if problem is None:
        note = (
            f"the master file {master} covers what the files hold and is marked incomplete "
            "(attribute complete = False)"
        )
    else:
        note = f"no master file: {problem}"
    acquisition.error = f"{incomplete_reason(acquisition)}; {note}"
