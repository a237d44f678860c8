"""Dealing images: metadata from the subscriber, the dealer's choice of writer and position,
the message to that writer.

Per image the work is: receive the raw metadata bytes, read the id, send the same bytes on
to one writer. A wake-up takes the message that woke it and every one already queued
behind it, at most DEAL_BATCH, and sends each writer its share at once: one RecordImages
to a stddaq writer that takes them, a RecordImage per image to any other (std_daq peers
get std_daq's messages only). With the subscriber's own ZMTP reader the queued messages
come with one recv.

Each wake-up costs the thread, the kernel and every writer a wake-up of its own. So after
a wake-up that emptied the queue (fewer than DEAL_BATCH images) the thread pauses before
it looks again, and the images that came meanwhile go out together: at 100 images/s one
wake-up and one message per writer per few images. A full batch is followed at once by
the next (a backlog is taken as fast as the thread can). The pause must never let a
writer's image be overwritten, whatever comes next (a camera's backlog after a receiver
restart arrives as fast as the receiver can take it). So it is bounded by the ring alone:
during a pause at most 1/GATHER_RING_FRACTION of the slots may fill even at the fastest a
receiver can ingest (MAX_INGEST_IMAGES_PER_S, or MAX_INGEST_BYTES_PER_S of this ring's
slots), and by GATHER_MAX_S. For 2 MiB images in 1000 slots that is about 52 ms; for small
images in a small ring no pause at all (below MIN_PAUSE_S).

Why a quarter is safe: an image waits at most one pause P for its writer, then at most the
time its writer needs for what the pause gathered, which at an ingest the writers sustain
is at most P again. So its slot must outlive 2 P, and with P = a quarter of the ring's lap
at the fastest ingest, 2 P is half a lap: the image is written with half the ring still
ahead of the receiver, at 10 GB/s (3.5 times what this machine's receiver can take), and
with 7/8 at what it does take. (An eighth, as before, cost the driver and each writer a
wake-up about every 26 ms: 0.06 ms more CPU per image each at 100 images/s.) What a user
sees is unchanged (progress is published every 100 ms, files are flushed every second); an
image reaches its writer at most one pause later, and a stop or n_image is acted on at most
one pause later.

Owned by the dealing thread (engine.py); what an image changes in the acquisition's life
(the first image, the last one, a failure) is AcquisitionLife's.
"""

from __future__ import annotations

import logging
import time

from stddaq_common.bus.metadata import MetadataError
from stddaq_common.config.model import DaqConfig
from stddaq_common.ring.geometry import ring_geometry
from stddaq_driver.acquisition import IdsWentBackwards
from stddaq_driver.acquisition_life import AcquisitionLife
from stddaq_driver.engine_parts import BATCH_S, DEALING, EngineParts
from stddaq_driver.image_ids import image_id_of
from stddaq_driver.state import DaqState
from stddaq_driver.writer_link import WriterUnreachable

log = logging.getLogger(__name__)

DEAL_BATCH = 64
"""Most images taken from the subscriber's queue per wake-up (and per writer message)."""
GATHER_MAX_S = 0.08
"""Longest pause after a wake-up that emptied the queue, to take the next ones together."""
GATHER_RING_FRACTION = 4
"""A pause lets at most n_slots / GATHER_RING_FRACTION images into the ring at the fastest
ingest rate below."""
MAX_INGEST_IMAGES_PER_S = 100_000.0
MAX_INGEST_BYTES_PER_S = 10e9
"""Faster than any receiver ingests (this machine: 2.8 GB/s, ~30,000 small images/s)."""
MIN_PAUSE_S = 0.005
"""A shorter pause gathers too little to be worth a sleep."""


def gather_pause(n_slots: int, slot_bytes: int) -> float:
    """Seconds a wake-up that emptied the queue may pause (0: none) without letting more than
    n_slots / GATHER_RING_FRACTION images into the ring at the fastest possible ingest."""
    fastest = min(MAX_INGEST_IMAGES_PER_S, MAX_INGEST_BYTES_PER_S / max(slot_bytes, 1))
    pause = min(GATHER_MAX_S, n_slots / GATHER_RING_FRACTION / fastest)
    return pause if pause >= MIN_PAUSE_S else 0.0


class ImageDealing:
    """Takes metadata from the subscriber and deals each image to a writer."""

    def __init__(self, parts: EngineParts, life: AcquisitionLife) -> None:
        self._parts = parts
        self._life = life
        self._pause_of: tuple[object, float] = (parts.config, self._pause_for(parts.config))
        """(config, the gather pause its ring allows): a config change may change the ring."""

    def pump(self) -> None:
        """Deal the images that come within BATCH_S (waiting at most POLL_MS for one).

        Each wake-up takes the message that woke it and those already queued behind it
        (at most DEAL_BATCH), deals them and sends each writer its share in one message;
        one that emptied the queue is followed by the gather pause (module text)."""
        subscriber = self._parts.subscriber
        life = self._life
        end = time.monotonic() + BATCH_S
        while True:
            raws = subscriber.receive_raw_batch(DEAL_BATCH)
            if not raws:
                return
            if life.state in DEALING:
                self._deal(raws)
                if len(raws) < DEAL_BATCH and life.state in DEALING:
                    self._gather()
                    return
            if time.monotonic() >= end:
                return

    @staticmethod
    def _pause_for(config: DaqConfig) -> float:
        geometry = ring_geometry(config)
        return gather_pause(geometry.n_slots, geometry.slot_bytes)

    def _gather(self) -> None:
        """After a wake-up that emptied the queue: pause so that the next images come
        together (bounded by the ring, module text)."""
        config = self._parts.config
        if self._pause_of[0] is not config:
            self._pause_of = (config, self._pause_for(config))
        pause = self._pause_of[1]
        if pause:
            time.sleep(pause)

    def _deal(self, raws: list[bytes]) -> None:
        """Deal `raws` in arrival order, then send every writer its share."""
        life, parts = self._life, self._parts
        acquisition = life.acquisition
        assert acquisition is not None
        dealer = acquisition.dealer
        n_image = dealer.n_image
        gaps_before = dealer.id_gaps
        shares: dict[int, tuple[int, list[bytes]]] = {}
        backwards: IdsWentBackwards | None = None
        deal = dealer.deal
        for raw in raws:
            try:
                image_id = image_id_of(raw)
            except MetadataError as error:
                parts.counters.bad_metadata.inc()
                parts.warnings.warning(
                    "bad metadata", "skipped metadata without a readable id: %s", error
                )
                continue
            try:
                dealt = deal(image_id)
            except IdsWentBackwards as error:
                backwards = error  # the images after it are not taken (error follows)
                break
            if dealt is None:
                parts.counters.repeated_ids.inc()
                parts.warnings.warning("repeated id", "skipped image %d: its id repeated", image_id)
                continue
            writer, position = dealt
            share = shares.get(writer)
            if share is None:
                shares[writer] = (position, [raw])
            else:
                share[1].append(raw)
            if n_image is not None and dealer.dealt >= n_image:
                break  # complete: later images are not taken
        if dealer.id_gaps != gaps_before:
            parts.counters.id_gaps.inc(dealer.id_gaps - gaps_before)
        self._send_shares(shares, acquisition.plan.acquisition_id)
        if backwards is not None:
            life.fail(str(backwards))
        elif life.state in DEALING and dealer.is_complete:
            life.begin_saving()

    def _send_shares(self, shares: dict[int, tuple[int, list[bytes]]], acq_id: int) -> None:
        """Every writer its share (all before any failure is acted on, so that a close sent
        on a failure follows the images each other writer was counted for)."""
        life, parts = self._life, self._parts
        sent = 0
        gone: list[tuple[int, WriterUnreachable]] = []
        for writer, (first_position, raws) in shares.items():
            try:
                parts.link.send_images(writer, acq_id, first_position, raws)
            except WriterUnreachable as error:
                gone.append((writer, error))
                continue
            sent += len(raws)
        if sent:
            parts.counters.images_dealt.inc(sent)
            if life.state is DaqState.WAITING_FOR_FIRST_IMAGE:
                life.move(DaqState.RECORDING)
        for writer, problem in gone:
            life.writer_gone(writer, problem)

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
