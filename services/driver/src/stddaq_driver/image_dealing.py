"""Dealing images: metadata from the subscriber, the dealer's choice of writer and position,
the message to that writer.

Per image the work is: receive the raw metadata bytes, read the id, send the same bytes on
to one writer. Owned by the dealing thread (engine.py); what an image changes in the
acquisition's life (the first image, the last one, a failure) is AcquisitionLife's.
"""

from __future__ import annotations

import logging
import time

from stddaq_common.bus.metadata import MetadataError
from stddaq_driver.acquisition import IdsWentBackwards
from stddaq_driver.acquisition_life import AcquisitionLife
from stddaq_driver.engine_parts import BATCH_S, DEALING, EngineParts
from stddaq_driver.image_ids import image_id_of
from stddaq_driver.state import DaqState
from stddaq_driver.writer_link import WriterUnreachable

log = logging.getLogger(__name__)


class ImageDealing:
    """Takes metadata from the subscriber and deals each image to a writer."""

    def __init__(self, parts: EngineParts, life: AcquisitionLife) -> None:
        self._parts = parts
        self._life = life

    def pump(self) -> None:
        """Deal the images that come within BATCH_S (waiting at most POLL_MS for one)."""
        subscriber = self._parts.subscriber
        end = time.monotonic() + BATCH_S
        while True:
            raw = subscriber.receive_raw()
            if raw is None:
                return
            if self._life.state in DEALING:
                self._deal(raw)
            if time.monotonic() >= end:
                return

    def _deal(self, raw: bytes) -> None:
        life, parts = self._life, self._parts
        acquisition = life.acquisition
        assert acquisition is not None
        try:
            image_id = image_id_of(raw)
        except MetadataError as error:
            parts.counters.bad_metadata.inc()
            parts.warnings.warning(
                "bad metadata", "skipped metadata without a readable id: %s", error
            )
            return
        dealer = acquisition.dealer
        gaps_before = dealer.id_gaps
        try:
            dealt = dealer.deal(image_id)
        except IdsWentBackwards as error:
            life.fail(str(error))
            return
        if dealt is None:
            parts.counters.repeated_ids.inc()
            parts.warnings.warning("repeated id", "skipped image %d: its id repeated", image_id)
            return
        writer, position = dealt
        try:
            parts.link.send_image(writer, acquisition.plan.acquisition_id, position, raw)
        except WriterUnreachable as error:
            life.writer_gone(writer, error)
            return
        parts.counters.images_dealt.inc()
        if dealer.id_gaps != gaps_before:
            parts.counters.id_gaps.inc(dealer.id_gaps - gaps_before)
        if life.state is DaqState.WAITING_FOR_FIRST_IMAGE:
            life.move(DaqState.RECORDING)
        if dealer.is_complete:
            life.begin_saving()

    def drop_idle(self) -> None:
        """While idle: drop the metadata that came (no acquisition takes it)."""
        subscriber = self._parts.subscriber
        end = time.monotonic() + BATCH_S
        while subscriber.receive_raw(0) is not None and time.monotonic() < end:
            pass

    def discard_queued(self) -> int:
        """Drop the metadata queued before a start (those images came before it); how many."""
        subscriber = self._parts.subscriber
        dropped = 0
        while subscriber.receive_raw(0) is not None:
            dropped += 1
        return dropped
