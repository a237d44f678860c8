"""The writer's command handling: what each driver command does to the acquisition and its file.

Which driver: a command carrying stddaq's additions comes from a stddaq driver; the
writer then answers with its events (counts, missing ids, ...) and also sends `progress`
and `heartbeat` on its own. A CreateFileCommand without them comes from a std_daq driver:
the writer then sends only std_daq's answers (code and reason, one per create, confirm
and close), names its file `<path><k>.h5` and writes images in the order received.

Besides the commands, `upkeep()` does the acquisition's timed work: a `progress` event
about every 200 ms while images flow, an SWMR flush of the open file every second (readers
see the file at most about a second behind), and the ring checks. The socket loop that
calls both is writer_process.py; answers go out through answers.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from stddaq_common.bus.driver_writer import (
    CloseCommand,
    ConfirmCommand,
    CreateCommand,
    EventKind,
    ImageBatchCommand,
    ImageCommand,
    MasterCommand,
    ProtocolError,
    encode_event,
    parse_command,
    parse_record_image,
    parse_record_images,
)
from stddaq_common.bus.metadata import ImageMetaDecoder, MetadataError
from stddaq_common.config.model import ConfigError, DaqConfig, parse_config
from stddaq_common.names import shm_name
from stddaq_common.ring.geometry import image_dtype, ring_geometry
from stddaq_common.ring.image_ring import ImageRing, RingError
from stddaq_common.runtime.stats import Stats
from stddaq_writer.acquisition import Acquisition, AcquisitionError, check_new_file
from stddaq_writer.answers import Answers
from stddaq_writer.chunk_writer import Outcome, ReadMode
from stddaq_writer.crash_repair import OpenFileNote
from stddaq_writer.direct_io import IoMode
from stddaq_writer.h5_layout import FileSpec, image_columns
from stddaq_writer.master_file import MasterFileError, build_master_file
from stddaq_writer.uid import UserSwitchError, acting_as, needs_switch, resolve_owner
from stddaq_writer.write_behind import DEFAULT_WINDOW_BYTES

perf_counter = time.perf_counter
_WRITTEN = Outcome.WRITTEN

log = logging.getLogger("stddaq.writer")

PROGRESS_INTERVAL_S = 0.2
"""A `progress` event about this often while images flow (each one is an event encoded and
sent, and a wake-up of the socket's I/O thread: at 0.1 s they were a few % of the
writer's CPU at 50 images/s)."""
FLUSH_INTERVAL_S = 1.0
FLUSH_OVERDUE_S = 2.0
"""A flush waits for a block boundary of the file's growth (image_file) at most this
long after the previous one (a stalled acquisition): then it drops the chunks allocated
ahead."""
REMEMBERED_ACQUISITIONS = 16
"""Recent `create` commands kept for their `master` (user, parameters, config)."""
STD_DAQ_PREFIX = "file"
"""std_daq's default file prefix: a std_daq create whose path is a directory writes
`<path>/file<k>.h5`."""


def std_daq_file(path: str, index: int) -> str:
    """The file writer `index` writes for a std_daq CreateFileCommand: `<path><k>.h5`, where
    std_daq's driver sends `<dir>/<file_prefix>` as the path (a directory: `file<k>.h5` in it)."""
    if path.endswith(os.sep) or os.path.isdir(path):
        return os.path.join(path, f"{STD_DAQ_PREFIX}{index}.h5")
    return f"{path}{index}.h5"


@dataclass(frozen=True)
class WriterOptions:
    """How a writer reads slots and writes files (the writer's command-line options)."""

    read_mode: ReadMode = "view"
    io_mode: IoMode = "direct"
    write_behind_bytes: int = DEFAULT_WINDOW_BYTES
    reserve_bytes: int = 8 * 1024 * 1024
    ring_suffix: str = "image"
    ring_timeout: float = 5.0
    shm_dir: str = "/dev/shm"


class WriterCommands:
    """Writer `index`'s commands and the one acquisition (one file) they act on."""

    def __init__(
        self,
        config: DaqConfig,
        index: int,
        stats: Stats,
        answers: Answers,
        options: WriterOptions | None = None,
    ) -> None:
        self.config = config
        self.index = index
        self._answers = answers
        self._options = options or WriterOptions()
        self._ring: ImageRing | None = None
        self._acq: Acquisition | None = None
        self._stddaq_driver = False
        """The last driver that spoke is a stddaq driver (it sends stddaq's additions)."""
        self._plain_acq = False
        """The open acquisition came from a std_daq driver (plain answers, arrival order)."""
        self._received = 0
        """Images received for the open std_daq acquisition (the next one's position)."""
        self._ready_sent = False
        self._recent: dict[int, CreateCommand] = {}
        self._open_note = OpenFileNote.of(config.ipc_dir, config.detector_name, index)
        self._open_note.repair_left_file()
        self._latency_sum = 0.0
        self._latency_count = 0
        self._last_latency: float | None = None
        """Seconds of the last image write, not yet in the `last_write_latency_us` gauge."""
        self._last_progress = 0.0
        self._last_flush = 0.0
        self._written = stats.counter("images_written", "images written to files")
        self._missing = stats.counter("images_missing", "images recorded missing (status 0)")
        self._bytes = stats.counter("bytes_written", "chunk bytes written to files")
        self._acquisitions = stats.counter("acquisitions", "files created")
        self._errors = stats.counter("errors", "acquisitions that ended in an error")
        self._bad_messages = stats.counter("bad_messages", "driver messages not understood")
        self._stale = stats.counter("stale_images", "images for no open acquisition")
        self._ring_vanished = stats.counter(
            "ring_name_vanished", "acquisitions during which the ring's name vanished"
        )
        self._write_latency = stats.gauge("last_write_latency_us", "time of the last image write")
        self._ring_resized = stats.counter(
            "ring_resized", "rings no longer read because another program resized their segment"
        )
        self._ring_unverified = stats.gauge(
            "ring_unverified",
            "the ring has no stddaq companion (made by std_daq): images cannot be proven untorn",
            initial=False,
        )
        self._unverified_reads = stats.counter(
            "unverified_reads", "images read from a ring without stddaq companion (not provably untorn)"
        )
        self._next_ring_check = 0.0
        self._unverified_seen = 0
        self._decode = ImageMetaDecoder().decode

    @property
    def open_acq_id(self) -> int | None:
        """The acquisition whose file is open here (None: none)."""
        acq = self._acq
        return acq.acq_id if acq is not None and acq.open else None

    def _send(self, event: EventKind | str, acq: Acquisition | None = None, **fields: Any) -> None:
        """An answer or message about `acq` in the dialect of the driver it belongs to."""
        self._answers.send(EventKind(event), acq, plain=self._plain(acq), **fields)

    def heartbeat(self) -> None:
        """Tell a stddaq driver this writer is alive (a std_daq driver gets nothing unasked)."""
        acq = self._acq
        self._send("heartbeat", acq_id=acq.acq_id if acq else None)

    def _plain(self, acq: Acquisition | None) -> bool:
        """True if messages about `acq` (None: no acquisition) go to a std_daq driver."""
        if acq is not None and acq is self._acq:
            return self._plain_acq
        return not self._stddaq_driver

    # ----------------------------------------------------------------- timed work

    def upkeep(self, now: float) -> None:
        """The acquisition's timed work: latency gauge, ring checks, progress, SWMR flush."""
        if self._last_latency is not None:
            self._write_latency.set(round(self._last_latency * 1e6, 1))
            self._last_latency = None
        self._check_ring(now)
        acq = self._acq
        if acq is not None and acq.open:
            if acq.progress.dirty and now - self._last_progress >= 0.9 * PROGRESS_INTERVAL_S:
                self._last_progress = now
                self._send("progress", acq, write_latency_s=self._take_mean_latency())
            since = now - self._last_flush
            if since >= FLUSH_INTERVAL_S:
                try:  # at a block boundary of the file's growth, unless overdue
                    done = acq.timed_flush(now, force=since >= FLUSH_OVERDUE_S)
                except AcquisitionError as error:
                    self._last_flush = now
                    self._report_failure(acq, str(error))
                    return
                if done:
                    self._last_flush = now
                    self._check_ring_name(acq)

    def _check_ring(self, now: float) -> None:
        """Twice a second: notice a ring resized by another program (one error, counted; the
        ring refuses every read from then on) and count unverified reads."""
        ring = self._ring
        if ring is None or now < self._next_ring_check:
            return
        self._next_ring_check = now + 0.5
        self._ring_intact(ring)

    def _ring_intact(self, ring: ImageRing) -> bool:
        """False (counted once per ring) once another program resized the ring's segment."""
        unverified = ring.counters["unverified_reads"]
        self._unverified_reads.inc(unverified - self._unverified_seen)
        self._unverified_seen = unverified
        if ring.resized:
            return False
        if ring.check_size():
            return True
        self._ring_resized.inc()
        return False

    def _take_mean_latency(self) -> float | None:
        """Mean seconds from an image message to its chunk written, since the last call."""
        if not self._latency_count:
            return None
        mean = self._latency_sum / self._latency_count
        self._latency_sum, self._latency_count = 0.0, 0
        return round(mean, 7)

    def _check_ring_name(self, acq: Acquisition) -> None:
        """Report (once per acquisition) a ring whose /dev/shm name vanished or was replaced.

        std_daq's readers unlink the name when they exit; the mapping stays valid and
        every image is still checked by id and seqlock, so the acquisition goes on.
        """
        ring = self._ring
        if ring is None or acq.ring_name_reported or ring.name_exists():
            return
        acq.ring_name_reported = True
        self._ring_vanished.inc()
        log.warning(
            "acquisition %d: ring %s no longer has its /dev/shm name (unlinked or replaced); "
            "images are still checked, the ring is re-attached at the next create",
            acq.acq_id, ring.name,
        )

    def handle(self, parts: list[bytes]) -> None:
        """Handle one driver message (one WriterAction part)."""
        if len(parts) == 1:  # the usual messages, read without protobuf
            batch = parse_record_images(parts[0])
            if batch is not None:
                self._on_images(*batch)
                return
            image = parse_record_image(parts[0])
            if image is not None:
                self._on_image(*image)
                return
        try:
            if len(parts) != 1:
                raise ProtocolError(f"a command is one WriterAction part, got {len(parts)} parts")
            command = parse_command(parts[0])
        except ProtocolError as error:
            self._bad_messages.inc()
            log.warning("bad driver message: %s", error)
            return
        if isinstance(command, ImageCommand):
            self._on_image(command.metadata, command.acq_id, command.index)
            return
        if isinstance(command, ImageBatchCommand):
            self._on_images(list(command.metadata), command.acq_id, command.first_index)
            return
        if isinstance(command, CreateCommand):
            self._stddaq_driver = command.stddaq
            self._on_create(command)
            return
        if isinstance(command, MasterCommand) or command.acq_id is not None or (
            isinstance(command, ConfirmCommand) and command.probe
        ):
            self._stddaq_driver = True
        if isinstance(command, ConfirmCommand):
            self._on_confirm(command)
        elif isinstance(command, CloseCommand):
            self._on_close(command)
        else:
            self._on_master(command)

    # ----------------------------------------------------------------- commands

    def _on_image(self, metadata: bytes, acq_id: int | None, position: int | None) -> None:
        """One image (its ImageMetadata bytes) for acquisition `acq_id` at `position` of the
        file (both None from a std_daq driver: the open file, in the order received)."""
        acq = self._acq
        if acq_id is None:  # std_daq: the open file, in the order received
            if acq is None or not self._plain_acq or not acq.open:
                self._stale.inc()
                return
            index = self._received
            self._received += 1
        else:
            if acq is None or self._plain_acq or acq.acq_id != acq_id or not acq.open:
                self._stale.inc()
                return
            index = position or 0
        started = perf_counter()
        try:
            meta = self._decode(metadata)
        except MetadataError as error:
            log.warning("image at index %d: %s", index, error)
            self._bad_messages.inc()
            try:
                acq.record_unreadable(index)
            except AcquisitionError as failure:
                self._report_failure(acq, str(failure))
            self._missing.inc()
            return
        try:
            outcome = acq.write(index, meta)
        except AcquisitionError as failure:
            self._report_failure(acq, str(failure))
            return
        if outcome is _WRITTEN:
            self._written.inc()
        else:
            self._missing.inc()
        latency = perf_counter() - started
        self._latency_sum += latency
        self._latency_count += 1
        self._last_latency = latency

    def _on_images(self, metadata: list[bytes], acq_id: int, first: int) -> None:
        """A RecordImages: `metadata[k]` (ImageMetadata bytes) at position `first + k` of
        acquisition `acq_id`'s file, written together (Acquisition.write_images); the same
        outcome, counts and records as one RecordImage per entry."""
        acq = self._acq
        if acq is None or self._plain_acq or acq.acq_id != acq_id or not acq.open:
            self._stale.inc(len(metadata))
            return
        started = perf_counter()
        decode = self._decode
        try:
            metas = [decode(data) for data in metadata]
        except MetadataError:  # an entry that is not ImageMetadata: one by one, as usual
            for index, data in enumerate(metadata, first):
                self._on_image(data, acq_id, index)
            return
        counts = acq.writer.counts
        written, missing = counts.written, counts.missing
        try:
            acq.write_images(first, metas)
        except AcquisitionError as failure:
            self._report_failure(acq, str(failure))
            return
        finally:
            self._written.inc(counts.written - written)
            self._missing.inc(counts.missing - missing)
        latency = perf_counter() - started  # each image waited for the whole batch
        self._latency_sum += latency * len(metas)
        self._latency_count += len(metas)
        self._last_latency = latency

    def _report_failure(self, acq: Acquisition, reason: str, *, answer: bool = False) -> None:
        """Count a failed acquisition and tell the driver: a stddaq driver at once, a
        std_daq driver in the answer to its next confirm or close (it expects no other)."""
        self._errors.inc()
        self._bytes.inc(acq.file.bytes_written)
        if answer or not self._plain(acq):
            self._send("error", acq, reason=reason)

    def _on_create(self, command: CreateCommand) -> None:
        if not command.stddaq:  # std_daq's driver: name the file as std_daq's writer does
            command = dataclasses.replace(
                command,
                acq_id=0,
                file=std_daq_file(command.path, self.index),
                writer_index=self.index,
                n_writers=self.config.writers,
                params={"path": command.path, "writer_id": command.uid},
            )
        acq_id = command.acq_id or 0
        file = command.file or ""
        previous = self._acq
        if previous is not None and previous.open:
            log.warning("acquisition %d replaced by %d before close", previous.acq_id, acq_id)
            self._close(
                previous, None, f"replaced by acquisition {acq_id} before close",
                notify=not self._plain_acq,
            )
        self._acq = None
        self._plain_acq = not self._stddaq_driver
        self._received = 0
        # Noted before the file exists, while still root (the note's folder is not the
        # acquisition user's): a crash from here on leaves a file the next process repairs.
        self._open_note.write(file, acq_id)
        try:
            acq = self._open(command)
        except AcquisitionError as error:
            self._open_note.clear()
            self._errors.inc()
            log.error("acquisition %d: %s", acq_id, error)
            self._send("error", acq_id=acq_id, file=file, reason=str(error))
            return
        self._acq = acq
        self._recent[acq_id] = command
        while len(self._recent) > REMEMBERED_ACQUISITIONS:
            del self._recent[next(iter(self._recent))]
        self._acquisitions.inc()
        self._last_flush = time.monotonic()
        log.info("acquisition %d: writing %s", acq_id, file)
        self._send("file_created", acq)

    def _open(self, command: CreateCommand) -> Acquisition:
        if command.writer_index != self.index:
            raise AcquisitionError(
                f"create for writer {command.writer_index} reached writer {self.index}"
            )
        config = self._config_of(command)
        ring = self._ring_of(config)
        spec = FileSpec(
            detector_name=config.detector_name,
            detector_type=config.detector_type,
            height=config.image_pixel_height,
            width=config.image_pixel_width,
            dtype=image_dtype(config),
            compression=command.compression,
            columns=image_columns(config.detector_type),
        )
        owner = resolve_owner(command.uid, command.gid) if needs_switch(command.uid) else None
        return Acquisition(
            command,
            spec,
            ring,
            owner=owner,
            read_mode=self._options.read_mode,
            write_behind_bytes=self._options.write_behind_bytes,
            direct_io=self._options.io_mode == "direct",
            reserve_bytes=self._options.reserve_bytes,
            daq_config=command.config or self.config.model_dump(mode="json"),
        )

    def _config_of(self, command: CreateCommand) -> DaqConfig:
        """The acquisition's DAQ config: the one in the command, else the writer's own."""
        if not command.config:
            return self.config
        try:
            config = parse_config(command.config, "create.config")
        except ConfigError as error:
            raise AcquisitionError("; ".join(error.lines)) from None
        if config.detector_name != self.config.detector_name:
            raise AcquisitionError(
                f"create.config is for detector {config.detector_name!r}, "
                f"this writer serves {self.config.detector_name!r}"
            )
        return config

    def _ring_of(self, config: DaqConfig) -> ImageRing:
        """The attached ring for this config (re-attached when replaced or resized)."""
        geometry = ring_geometry(config)
        ring = self._ring
        if ring is not None and (
            ring.geometry != geometry
            or not self._ring_intact(ring)
            or not ring.name_exists()
            or (not ring.verified and os.path.exists(ring.companion_path))  # stddaq took it over
        ):
            self._unverified_seen = 0
            ring.close()
            self._ring = ring = None
        if ring is None:
            name = shm_name(config.detector_name, self._options.ring_suffix)
            try:
                ring = ImageRing.attach(
                    name, geometry, shm_dir=self._options.shm_dir,
                    timeout=self._options.ring_timeout, foreign=True,
                )
            except RingError as error:
                raise AcquisitionError(f"cannot read images: {error}") from None
            self._ring = ring
            self._ring_unverified.set(not ring.verified)
        return ring

    def _on_confirm(self, command: ConfirmCommand) -> None:
        """A probe: `ready` (first time) or `heartbeat`. Else: every image sent before is
        written (images are written as they come): `confirmed`, or the acquisition's error."""
        acq = self._acq
        if command.probe:
            kind = EventKind.HEARTBEAT if self._ready_sent else EventKind.READY
            payload = encode_event(
                self.index,
                kind,
                acq_id=acq.acq_id if acq is not None and acq.open else None,
                batches=True,  # this writer takes RecordImages
            )
            self._ready_sent = self._answers.push(payload) or self._ready_sent
            return
        acq = self._acquisition_for(command.acq_id, "confirm")
        if acq is None:
            return
        if acq.failure is not None:
            self._send("error", acq, reason=acq.failure)
        else:
            self._send("confirmed", acq)

    def _acquisition_for(self, acq_id: int | None, what: str) -> Acquisition | None:
        """The acquisition a `what` command for `acq_id` (None: std_daq's, which names none)
        is about; None (an error answer naming it, counted) if it has no file here."""
        acq, plain = self._acq, acq_id is None
        if acq is not None and plain == self._plain_acq and (plain or acq.acq_id == acq_id):
            return acq
        self._bad_messages.inc()
        self._send("error", acq_id=acq_id, reason=f"{what} for acquisition {acq_id}, which has no file here")
        return None

    def _on_close(self, command: CloseCommand) -> None:
        acq = self._acquisition_for(command.acq_id, "close")
        if acq is None:
            return
        self._close(acq, command.n_images, command.reason)
        self._acq = None

    def _close(
        self, acq: Acquisition, n_images: int | None, reason: str, *, notify: bool = True
    ) -> None:
        """Close `acq`'s file; answer `closed` or `error` (unless not `notify`)."""
        was_open = acq.open
        try:
            summary = acq.close(n_images, reason)
        except AcquisitionError as error:
            self._report_failure(acq, str(error), answer=notify)
            return
        finally:
            self._open_note.clear()
        if was_open:
            self._bytes.inc(summary.bytes_written)
        log.info(
            "acquisition %d: closed %s (%d images, %d written, %d missing)",
            acq.acq_id, acq.path, summary.n_images, summary.n_written, summary.n_missing,
        )
        if not notify:
            return
        if self._plain_acq and acq.failure is not None:
            self._send("error", acq, reason=acq.failure)  # std_daq: FAILURE, the reason
        else:
            self._send("closed", acq, reason=acq.failure or reason)

    def _on_master(self, command: MasterCommand) -> None:
        """Build the master file as the acquisition's user; answer `closed` or `error`."""
        created = self._recent.get(command.acq_id)
        owner = None
        if created is not None and needs_switch(created.uid):
            owner = resolve_owner(created.uid, created.gid)
        try:
            with acting_as(owner):
                check_new_file(command.file)
                summary = build_master_file(
                    command.file,
                    command.detector,
                    command.files,
                    params=created.params if created else None,
                    daq_config=created.config if created else None,
                    skip_unreadable=bool(command.incomplete_reason),
                    incomplete_reason=command.incomplete_reason or None,
                    images_dealt=command.images_per_file,
                )
        except (AcquisitionError, MasterFileError, UserSwitchError) as error:
            self._errors.inc()
            log.error("acquisition %d: master file: %s", command.acq_id, error)
            self._send("error", acq_id=command.acq_id, file=command.file, reason=str(error))
            return
        note = ""
        if not summary.complete:
            note = f"marked incomplete: {summary.incomplete_reason}"
            log.warning("acquisition %d: master file %s %s", command.acq_id, command.file, note)
        elif command.images_per_file is not None and command.images_per_file != summary.images_per_file:
            note = (
                f"the files hold {summary.images_per_file} images, "
                f"{command.images_per_file} were dealt"
            )
            log.warning("acquisition %d: master file %s: %s", command.acq_id, command.file, note)
        log.info(
            "acquisition %d: master file %s (%d entries over %d files)",
            command.acq_id, command.file, summary.n_entries, len(command.files),
        )
        self._send(
            "closed",
            acq_id=command.acq_id,
            file=command.file,
            written=summary.n_entries - summary.n_missing,
            missing=summary.n_missing,
            reason=note,
        )

    def close(self) -> None:
        """Close an open file (reason: writer stopped) and the ring."""
        acq = self._acq
        if acq is not None and acq.open:  # a std_daq driver expects no unasked answer
            self._close(
                acq, None, "writer stopped before the acquisition was closed",
                notify=not self._plain_acq,
            )
        self._acq = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
