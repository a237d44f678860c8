"""Command line of the live stream, in std_daq's shape.

    stddaq-live-stream CONFIG tcp://127.0.0.1:20000 [-s SUFFIX] [-sm SUFFIX] [-si SUFFIX]
                       [-t array-1.0|bsread]

std_daq's flags, with std_daq's meaning: `-sm/--source_suffix_meta` (the metadata
stream), `-si/--source_suffix_image` (the image buffer), `-t/--type`, and `--socket pub`
(std_daq's `-s/--socket`; `-s pub` and `-s push` are read as the socket, any other `-s`
value as the older std_daq's `-s/--source_suffix`, metadata and images). argparse matches
`-sm` and `-si` whole, so `-sm image` is never `-s m`. stddaq's live stream only
publishes: `push` is refused with a clear error.

CONFIG (the DAQ config file) and the common service options come from
stddaq_common.runtime.runner; this module adds the live stream's own arguments.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Literal, cast

from stddaq_common.names import IMAGE_SUFFIX
from stddaq_common.runtime.arg_types import int_in_range

OutputType = Literal["array-1.0", "bsread"]
OUTPUT_TYPES: tuple[OutputType, ...] = ("array-1.0", "bsread")


DEFAULT_NICE = 10
"""Live viewing yields the CPU to the acquisition (receiver, writers) when they compete."""

_SUFFIX = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _suffix(text: str) -> str:
    if not _SUFFIX.match(text):
        raise argparse.ArgumentTypeError(f"suffix {text!r} may only hold letters, digits, '_', '.', '-'")
    return text


_send_hwm = int_in_range(1, 100_000)

SOCKET_TYPES = ("pub", "push")


def _socket(text: str) -> str:
    if text not in SOCKET_TYPES:
        raise argparse.ArgumentTypeError(f"socket {text!r} is not pub or push")
    if text == "push":
        raise argparse.ArgumentTypeError(
            "socket push (std_daq's PUSH output to one consumer) is not supported: stddaq's "
            "live stream publishes to any number of viewers (pub)"
        )
    return text


class _SocketOrSuffix(argparse.Action):
    """`-s`: std_daq's `--socket` when the value is pub or push, else the older
    std_daq's `--source_suffix`."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        text = str(values)
        try:
            if text in SOCKET_TYPES:
                namespace.socket = _socket(text)
            else:
                namespace.source_suffix = _suffix(text)
        except argparse.ArgumentTypeError as error:
            parser.error(f"argument -s: {error}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the live stream's arguments (after CONFIG) to the service parser."""
    parser.add_argument(
        "stream_address", metavar="ADDRESS",
        help="TCP address the viewers' PUB socket binds, e.g. tcp://127.0.0.1:20000; it must be "
        "a key of live_stream_configs, which gives the rate mode",
    )
    parser.add_argument(
        "-s", dest="source_suffix", action=_SocketOrSuffix, default=IMAGE_SUFFIX,
        metavar="SUFFIX|pub",
        help="pub: std_daq's --socket; anything else: --source_suffix",
    )
    parser.add_argument(
        "--source-suffix", "--source_suffix", dest="source_suffix", type=_suffix,
        default=IMAGE_SUFFIX, metavar="SUFFIX",
        help="suffix of the buffer to stream: metadata from ipc://<ipc_dir>/<detector>-SUFFIX, images "
        "from /dev/shm/<detector>-SUFFIX (default: image)",
    )
    parser.add_argument(
        "--socket", dest="socket", type=_socket, default="pub",
        help="std_daq's output socket type: pub (the only one stddaq serves)",
    )
    parser.add_argument(
        "-sm", "--source_suffix_meta", "--source-suffix-meta", "--metadata-suffix",
        "--metadata_suffix", dest="metadata_suffix", type=_suffix, default=None,
        metavar="SUFFIX", help="metadata stream suffix, if it differs from --source-suffix",
    )
    parser.add_argument(
        "-si", "--source_suffix_image", "--source-suffix-image", "--image-suffix",
        "--image_suffix", dest="image_suffix", type=_suffix, default=None,
        metavar="SUFFIX", help="image buffer suffix, if it differs from --source-suffix",
    )
    parser.add_argument(
        "-t", "--type", dest="output_type", choices=OUTPUT_TYPES, default="array-1.0",
        help="message format sent to viewers (default: array-1.0)",
    )
    parser.add_argument(
        "--send-hwm", dest="send_hwm", type=_send_hwm, default=None, metavar="N",
        help="images queued per viewer before newer ones are dropped for it (default: std_daq's 100, "
        "fewer for large images so that a stalled viewer holds at most ~64 MiB)",
    )
    parser.add_argument(
        "--send-buffers", dest="send_buffers", type=int_in_range(0, 10_000), default=None, metavar="N",
        help="reusable zero-copy send buffers for large images (default: send_hwm + 4; "
        "0: copy every image into a new ZeroMQ message)",
    )
    parser.add_argument(
        "--nice", dest="nice", type=int_in_range(0, 19), default=DEFAULT_NICE, metavar="N",
        help=f"lower the live stream's CPU priority by N (default {DEFAULT_NICE}): when CPUs are "
        "short, the acquisition's services come first; 0 keeps the priority",
    )
    parser.add_argument(
        "--bsread-channel", dest="bsread_channel", default=None, metavar="NAME",
        help="channel name in bsread mode (default: the image's PCO bsread_name, else <detector>:image)",
    )


@dataclass(frozen=True, slots=True)
class LiveStreamOptions:
    """The live stream's own command-line choices."""

    stream_address: str
    metadata_suffix: str
    image_suffix: str
    output_type: OutputType
    send_hwm: int | None
    send_buffers: int | None
    nice: int
    bsread_channel: str | None


def options_from(args: argparse.Namespace) -> LiveStreamOptions:
    """The options parsed by a parser that `add_arguments` set up."""
    source: str = args.source_suffix
    return LiveStreamOptions(
        stream_address=args.stream_address,
        metadata_suffix=args.metadata_suffix or source,
        image_suffix=args.image_suffix or source,
        output_type=cast(OutputType, args.output_type),
        send_hwm=args.send_hwm,
        send_buffers=args.send_buffers,
        nice=args.nice,
        bsread_channel=args.bsread_channel,
    )
