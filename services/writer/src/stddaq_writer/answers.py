"""What the writer sends its driver, in that driver's dialect.

A stddaq driver gets stddaq's events (with the acquisition's counts, missing ids, flush
state); a std_daq driver gets only std_daq's answers (code and reason), never anything
unasked (no progress, heartbeat or ready). Messages: stddaq_common.bus.driver_writer.
"""

from __future__ import annotations

import time
from typing import Any

from stddaq_common.bus.driver_writer import EventKind, encode_event, encode_plain_response
from stddaq_common.runtime.stats import Counter
from stddaq_writer.acquisition import Acquisition
from stddaq_writer.driver_link import DriverLink

_UNASKED = (EventKind.PROGRESS, EventKind.HEARTBEAT)


class Answers:
    """Writer `index`'s messages to its driver over `link`; dropped ones are counted."""

    def __init__(self, link: DriverLink, index: int, dropped: Counter) -> None:
        self._link = link
        self._index = index
        self._dropped = dropped
        self.last_sent = 0.0
        """time.monotonic() of the last message sent (or dropped)."""

    def send(self, kind: EventKind, acq: Acquisition | None, *, plain: bool, **fields: Any) -> None:
        """`kind` about `acq` (None: no acquisition): a std_daq answer if `plain`, else
        stddaq's event with the acquisition's counts filled in."""
        unasked = kind in _UNASKED
        if plain:
            if unasked or kind is EventKind.READY:
                return
            self.push(encode_plain_response(kind is not EventKind.ERROR, fields.get("reason", "")))
            return
        if acq is not None:
            counts = acq.writer.counts
            summary = acq.summary
            fields.setdefault("acq_id", acq.acq_id)
            fields.setdefault("file", acq.path)
            fields.setdefault("written", acq.images_in_file)
            fields.setdefault("missing", summary.n_missing if summary else counts.missing)
            fields.setdefault("bytes_written", acq.file.bytes_written)
            fields.setdefault("missing_ids", acq.take_missing_ids())
            fields.setdefault("flushed", acq.flushed)
        self.push(encode_event(self._index, kind, batches=True, **fields), wait=not unasked)

    def push(self, payload: bytes, *, wait: bool = True) -> bool:
        """Send one message (an answer, `wait`: may wait briefly for the driver's
        connection); False (counted) if it was dropped."""
        self.last_sent = time.monotonic()
        if self._link.send(payload, wait=wait):
            return True
        self._dropped.inc()
        return False
