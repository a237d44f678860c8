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
wake-up, and one message per writer, per 20 images. A full batch is followed at once by the
next (a backlog is taken as fast as the thread can). The pause must never let a writer's
image be overwritten, whatever comes next (a camera's backlog after a receiver restart
arrives as fast as the receiver can take it), so it ends on what arrives, not on an
assumed rate: with the subscriber's own ZMTP reader it is one receive that the kernel holds
back until `gather_target` images' metadata came (the socket's low-water mark:
MetadataSubscriber.wait_for; nothing wakes before), or GATHER_S (200 ms) passed. The
target is an eighth of the ring's slots, DEAL_BATCH, or what the acquisition still needs,
whichever is fewest: the last image of an n_image acquisition is dealt at once.

Why this is safe: a pause lets in at most an eighth of the ring (twice that if the
messages were half the size the reader learned: they are alike in size), at any rate. An
image waits at most one pause for its writer, then at most the time its writer needs for
what the pause gathered, during which at an ingest the writers sustain as much again
comes. So its slot must outlive at most half a lap, at whatever rate the camera sends.

With libzmq's SUB (a ZMTP 2 publisher, or chosen), whose queue cannot be counted, the
pause is a sleep bounded by the ring alone (`gather_pause`): during it at most a quarter
of the slots may fill even at the fastest a receiver can ingest (MAX_INGEST_IMAGES_PER_S,
or MAX_INGEST_BYTES_PER_S of this ring's slots), so 2 pauses are half a lap at 10 GB/s
(3.5 times what this machine's receiver takes): about 52 ms for 2 MiB images in 1000 slots,
none for small images in a small ring; a command ends it.

What a pause costs and what a user sees: at 100 images/s, pauses of 52 ms cost the driver
11 and each writer 17 ms of CPU per second; 200 ms: 4 and 11. An image reaches its writer
at most 200 ms later (`images_written` lags by as much more; files are flushed every second
as before), and a stop is acted on at most 200 ms later.

Owned by the dealing thread (engine.py); what an image changes in the acquisition's life
(the first image, the last one, a failure) is AcquisitionLife's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

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
GATHER_S = 0.2
"""Longest pause after a wake-up that emptied the queue (what arrives ends it sooner)."""
GATHER_COUNT_FRACTION = 8
"""A pause ends once n_slots / GATHER_COUNT_FRACTION images wait (at most)."""
GATHER_MAX_S = 0.08
"""Longest pause without a count (libzmq's SUB)."""
GATHER_RING_FRACTION = 4
"""A pause without a count lets at most n_slots / GATHER_RING_FRACTION images into the ring
at the fastest ingest rate below."""
MAX_INGEST_IMAGES_PER_S = 100_000.0
MAX_INGEST_BYTES_PER_S = 10e9
"""Faster than any receiver ingests (this machine: 2.8 GB/s, ~30,000 small images/s)."""
MIN_PAUSE_S = 0.005
"""A shorter pause without a count gathers too little to be worth a sleep."""


def gather_target(n_slots: int, still_needed: int | None) -> int:
    """How many waiting images end a pause: an eighth of the ring, a batch, or the images
    the acquisition still needs (None: no end set), whichever is fewest (at least 1)."""
    target = min(DEAL_BATCH, n_slots // GATHER_COUNT_FRACTION)
    if still_needed is not None:
        target = min(target, still_needed)
    return max(1, target)


def gather_pause(n_slots: int, slot_bytes: int) -> float:
    """Seconds a pause without a count may sleep (0: none) without letting more than
    n_slots / GATHER_RING_FRACTION images into the ring at the fastest possible ingest."""
    fastest = min(MAX_INGEST_IMAGES_PER_S, MAX_INGEST_BYTES_PER_S / max(slot_bytes, 1))
    pause = min(GATHER_MAX_S, n_slots / GATHER_RING_FRACTION / fastest)
    return pause if pause >= MIN_PAUSE_S else 0.0


class ImageDealing:
    """Takes metadata from the subscriber and deals each image to a writer."""

    def __init__(self, parts: EngineParts, life: AcquisitionLife, nap: Callable[[float], None]) -> None:
        self._parts = parts
        self._life = life
        self._nap = nap
        """Sleeps up to the seconds given unless a command comes: IdleWait.nap."""
        self._ring_facts: tuple[object, float, int] = self._ring_facts_of(parts.config)
        """(config, the pause without a count its ring allows, its slots): a config change
        may change the ring."""

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
    def _ring_facts_of(config: DaqConfig) -> tuple[object, float, int]:
        geometry = ring_geometry(config)
        return config, gather_pause(geometry.n_slots, geometry.slot_bytes), geometry.n_slots

    def _gather(self) -> None:
        """After a wake-up that emptied the queue: pause so that the next images come
        together, until enough of them wait or GATHER_S passed (module text)."""
        config = self._parts.config
        if self._ring_facts[0] is not config:
            self._ring_facts = self._ring_facts_of(config)
        _, blind, n_slots = self._ring_facts
        dealer = self._life.acquisition.dealer if self._life.acquisition is not None else None
        still_needed = None
        if dealer is not None and dealer.n_image is not None:
            still_needed = dealer.n_image - dealer.dealt
        counted = self._parts.subscriber.wait_for(gather_target(n_slots, still_needed), GATHER_S)
        if not counted and blind:
            self._nap(blind)  # libzmq: no count

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
