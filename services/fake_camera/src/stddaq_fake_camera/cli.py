"""Command line of the fake PCO camera.

    python -m stddaq_fake_camera --address tcp://*:9999 [--shape 2160 2560] [--dtype uint16]
        [--rate HZ] [--frames N] [--first-id ID] [--channel NAME] [--compression none|...]
        [--no-type-shape] [--format bsread|array-1.0] [fault options]

Prints `READY fake_camera endpoint=<bound address> pid=<pid>` once the socket is bound and
the frames are prepared, sends, and exits 0 when every frame is sent (or on SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading

import numpy as np

from stddaq_common.runtime.runner import StartupError
from stddaq_fake_camera.camera import FakeCamera, SendCounts, StopFlag
from stddaq_fake_camera.frames import DEFAULT_PERIOD, FramePattern
from stddaq_fake_camera.messages import COMPRESSIONS, MessageMaker
from stddaq_fake_camera.schedule import Faults, parse_burst, parse_ids, send_plan

log = logging.getLogger("stddaq.fake_camera")

SERVICE_NAME = "fake_camera"
PCO_EDGE_SHAPE = (2160, 2560)
"""A pco.edge 5.5 frame: 2160 rows x 2560 columns."""


def _ids(text: str) -> frozenset[int]:
    try:
        return parse_ids(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _burst(text: str) -> tuple[int, int]:
    try:
        return parse_burst(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _dtype(text: str) -> np.dtype[np.generic]:
    try:
        dtype = np.dtype(text)
    except TypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a numpy pixel type") from None
    if dtype.kind not in "iuf" or dtype.itemsize not in (1, 2, 4, 8):
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or float pixel type")
    return dtype


def build_parser() -> argparse.ArgumentParser:
    """The fake camera's argument parser."""
    p = argparse.ArgumentParser(prog="stddaq-fake-camera", description="Fake PCO camera: BSREAD over PUSH")
    p.add_argument("--address", default="tcp://*:9999",
                   help="address to bind the PUSH socket (tcp://host:* picks a free port)")
    p.add_argument("--shape", type=int, nargs=2, metavar=("ROWS", "COLUMNS"), default=PCO_EDGE_SHAPE,
                   help="image rows and columns (default: pco.edge 5.5, 2160 2560)")
    p.add_argument("--dtype", type=_dtype, default=np.dtype("<u2"),
                   help="pixel type, numpy notation (uint16, >u2 for big-endian, float32, ...)")
    p.add_argument("--rate", type=float, default=10.0, metavar="HZ",
                   help="frames per second; 0 = as fast as the receiver takes them (default 10)")
    p.add_argument("--frames", type=int, default=0, metavar="N",
                   help="pulse ids to produce (skipped ones included); 0 = endless (default)")
    p.add_argument("--first-id", type=int, default=0, metavar="ID", help="first pulse id (default 0)")
    p.add_argument("--channel", default="pco:FPICTURE", help="BSREAD channel name of the image")
    p.add_argument("--compression", choices=COMPRESSIONS, default="none", help="value compression")
    p.add_argument("--no-type-shape", action="store_true",
                   help="leave type and shape out of the data header (as psi-bsread's Sender does)")
    p.add_argument("--format", dest="output_format", choices=("bsread", "array-1.0"), default="bsread",
                   help="message format (default bsread)")
    p.add_argument("--period", type=int, default=DEFAULT_PERIOD,
                   help=f"frames repeat after this many ids (default {DEFAULT_PERIOD}); a small "
                   "period keeps all compressed frames prepared")
    p.add_argument("--socket", dest="socket_type", choices=("push", "pub"), default="push",
                   help="socket to bind: push (default, like the PCO camera server) or pub")
    p.add_argument("--sndhwm", type=int, default=10,
                   help="send queue per connection in messages (default 10, as psi-bsread's Sender)")
    p.add_argument("--linger", type=float, default=10.0, metavar="SECONDS",
                   help="at the end, how long queued messages may take to leave (default 10)")
    p.add_argument("--log-level", default="info")
    faults = p.add_argument_group("fault modes (ids as 5,7,10-12)")
    faults.add_argument("--skip", type=_ids, default=frozenset(), metavar="IDS", help="ids never sent")
    faults.add_argument("--duplicate", type=_ids, default=frozenset(), metavar="IDS",
                        help="ids sent twice")
    faults.add_argument("--wrong-shape", type=_ids, default=frozenset(), metavar="IDS",
                        help="ids sent with one extra image row")
    faults.add_argument("--garbage", type=_ids, default=frozenset(), metavar="IDS",
                        help="ids replaced by a malformed message")
    faults.add_argument("--reverse-burst", type=_burst, action="append", default=[],
                        metavar="START:LENGTH", help="send these ids in reverse order (repeatable)")
    faults.add_argument("--restart-every", type=int, default=None, metavar="N",
                        help="start again at --first-id after every N ids (a camera restart)")
    faults.add_argument("--restart-pause", type=float, default=0.0, metavar="SECONDS",
                        help="pause this long at each restart (default 0)")
    return p


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.shape[0] < 1 or args.shape[1] < 1:
        parser.error(f"--shape {args.shape[0]} {args.shape[1]}: both must be >= 1")
    if args.rate < 0 or args.frames < 0 or args.first_id < 0 or args.period < 1:
        parser.error("--rate, --frames and --first-id must be >= 0, --period >= 1")
    if args.restart_every is not None and args.restart_every < 1:
        parser.error("--restart-every must be >= 1")
    if args.output_format == "array-1.0" and args.compression != "none":
        parser.error("--format array-1.0 carries raw pixels only: use --compression none")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked options (usage errors exit 2, as argparse does)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(args, parser)
    return args


class CameraService:
    """The fake camera as a runner service: bound at build, sends in run(), closes in close()."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        pattern = FramePattern(tuple(args.shape), args.dtype, args.period)
        maker = MessageMaker(
            pattern,
            input_format=args.output_format,
            channel=args.channel,
            compression=args.compression,
            with_type_and_shape=not args.no_type_shape,
        )
        self.faults = Faults(
            skip=args.skip, duplicate=args.duplicate, wrong_shape=args.wrong_shape, garbage=args.garbage,
            reverse_bursts=tuple(args.reverse_burst), restart_every=args.restart_every,
        )
        self.n_frames = args.frames or None
        if maker.compressed is not None:
            distinct = min(args.period, self.n_frames or args.period)
            maker.compressed.prebuild(range(args.first_id, args.first_id + distinct))
        try:
            self.camera = FakeCamera(args.address, maker, sndhwm=args.sndhwm, socket_type=args.socket_type)
        except ValueError as error:
            raise StartupError(str(error)) from None
        self.stop = StopFlag()
        self.counts: SendCounts | None = None
        self.stopped = False
        """Whether a stop request ended the sending (the runner sets its stop Event after
        run() in any case, so this is noted when run() returns)."""

    @property
    def endpoint(self) -> str:
        """The address the socket is bound to (a `*` port resolved)."""
        return self.camera.endpoint

    def run(self, stop: threading.Event) -> None:
        """Send every planned frame (until done or `stop` is set)."""
        args = self.args
        self.stop = StopFlag(stop)
        log.info("sending %s %s frames %s to %s, rate %s", args.output_format, args.dtype,
                 list(args.shape), self.camera.endpoint, args.rate or "max")
        self.counts = self.camera.run(
            send_plan(args.first_id, self.n_frames, self.faults), args.rate, self.stop, args.restart_pause
        )
        self.stopped = self.stop.requested

    def close(self) -> None:
        """Close the socket: queued messages get --linger seconds to leave unless stopped."""
        stopped = self.stopped
        self.camera.close(0.0 if stopped or self.counts is None else self.args.linger)
        counts = self.counts
        if counts is None:
            return
        rate = counts.messages / counts.seconds if counts.seconds > 0 else 0.0
        log.info("sent %d messages (%s), %.3f GB in %.2f s, %.1f messages/s%s", counts.messages,
                 counts.by_kind, counts.bytes / 1e9, counts.seconds, rate, " (stopped)" if stopped else "")


def ready_line(service: CameraService) -> str:
    """`READY fake_camera endpoint=<bound address> pid=<pid>`."""
    return f"READY {SERVICE_NAME} endpoint={service.endpoint} pid={os.getpid()}"
