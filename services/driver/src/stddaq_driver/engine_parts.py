"""What the dealing thread's parts share: its sockets, the status board, the counters.

The engine (engine.py) composes three parts, each with one job: ImageDealing
(image_dealing.py), WriterEvents (writer_events.py) and AcquisitionLife
(acquisition_life.py). They reach the sockets through one EngineParts, so a config change
that reopens a socket is seen by all of them. Timing constants of the thread live here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stddaq_common.bus.metadata_stream import MetadataSubscriber
from stddaq_common.config.model import DaqConfig
from stddaq_common.rate_limited_log import RateLimitedLog
from stddaq_driver.driver_stats import EngineCounters
from stddaq_driver.state import DaqState
from stddaq_driver.status_board import StatusBoard
from stddaq_driver.writer_link import WriterLink

log = logging.getLogger("stddaq_driver.engine")

POLL_MS = 20
"""Longest wait for a message before commands, events and timeouts are looked at."""
BATCH_S = 0.02
"""Longest time spent dealing images before looking at commands and events."""
TURN_S = 0.1
"""The loop's housekeeping turn comes this often: the writers' events are taken (while
images are dealt; otherwise at every pass), timeouts (all of seconds) looked at, progress
figures published to the status board, all in the same pass of the loop. One pass that
wakes cold caches for all of them costs less than separate ones (each look costs a poll of
the writers' sockets; they report progress every 100 ms)."""
PUBLISH_S = TURN_S
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
LOG_INTERVAL_S = 5.0

DEALING = frozenset({DaqState.WAITING_FOR_FIRST_IMAGE, DaqState.RECORDING})
"""States in which images are dealt to the writers."""
HOLDING = frozenset({DaqState.STARTED, DaqState.CREATING_FILE})
"""States in which images wait in the subscriber's queue (the files do not exist yet)."""
CLOSING = frozenset({DaqState.SAVING_FILE, DaqState.ERROR})
"""States in which the writers are asked to close their files."""


@dataclass(slots=True)
class EngineParts:
    """The dealing thread's sockets and shared objects (replaced on a config change)."""

    config: DaqConfig
    board: StatusBoard
    counters: EngineCounters
    link: WriterLink
    subscriber: MetadataSubscriber
    warnings: RateLimitedLog
