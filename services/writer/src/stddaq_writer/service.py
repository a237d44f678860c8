"""The writer as a runner service: its options and build() (stddaq_common.runtime.runner)."""

from __future__ import annotations

import argparse
import signal

from stddaq_common.config.model import DaqConfig
from stddaq_common.runtime.arg_types import int_in_range
from stddaq_common.runtime.runner import StartupError
from stddaq_common.runtime.stats import Stats
from stddaq_writer.chunk_writer import READ_MODES
from stddaq_writer.direct_io import IO_MODES
from stddaq_writer.disk_reserve import DEFAULT_RESERVE_BYTES
from stddaq_writer.write_behind import DEFAULT_WINDOW_BYTES
from stddaq_writer.writer_commands import WriterOptions
from stddaq_writer.writer_process import WriterService

SERVICE_NAME = "writer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The writer's own options, after the DAQ config file."""
    parser.add_argument("--index", type=int, default=0, help="writer index k (0..N-1)")
    parser.add_argument(
        "writer_id", type=int, nargs="?", default=None, metavar="WRITER_ID",
        help="std_daq's positional writer index (the same as --index)",
    )
    parser.add_argument(
        "--read-mode",
        choices=READ_MODES,
        default="view",
        help="view: write chunks straight from the ring slot, re-checked after the write "
        "(default); copy: copy the slot out first",
    )
    parser.add_argument(
        "--io",
        choices=IO_MODES,
        default="direct",
        help="direct: uncompressed images go to the disk with O_DIRECT straight from the ring "
        "slot (default; the page cache where the file system or the image size does not allow "
        "it); buffered: through the page cache with write-behind",
    )
    parser.add_argument(
        "--write-behind-mb",
        type=int_in_range(0, 1 << 20),
        default=DEFAULT_WINDOW_BYTES // 2**20,
        help="every this many MB written, start writing them back to disk and drop the "
        "previous ones from the page cache (0: leave the page cache to the kernel)",
    )
    parser.add_argument(
        "--disk-reserve-mb",
        type=float,
        default=DEFAULT_RESERVE_BYTES / 2**20,
        help="space kept free next to each file to close it cleanly on a full disk",
    )
    parser.add_argument(
        "-s", "--source_suffix", "--ring-suffix", dest="ring_suffix", default="image",
        help="ring to read: <detector>-<suffix> (std_daq's -s/--source_suffix)",
    )
    parser.add_argument(
        "--ring-timeout", type=float, default=5.0, help="seconds to wait for the ring at create"
    )
    parser.add_argument("--shm-dir", default="/dev/shm", help="directory of the ring segments")


def build(config: DaqConfig, args: argparse.Namespace, stats: Stats) -> WriterService:
    """Make writer `--index` (or std_daq's positional WRITER_ID) of this config."""
    if args.writer_id is not None:
        if args.index not in (0, args.writer_id):
            raise StartupError(f"WRITER_ID {args.writer_id} and --index {args.index} differ")
        args.index = args.writer_id
    if not 0 <= args.index < config.writers:
        raise StartupError(
            f"--index {args.index} is outside 0..{config.writers - 1} "
            f"(number_of_writers={config.number_of_writers})"
        )
    # A file-size limit must make write() fail with EFBIG (reported), not kill the writer.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    options = WriterOptions(
        read_mode=args.read_mode,
        io_mode=args.io,
        write_behind_bytes=int(args.write_behind_mb * 2**20),
        reserve_bytes=int(args.disk_reserve_mb * 2**20),
        ring_suffix=args.ring_suffix,
        ring_timeout=args.ring_timeout,
        shm_dir=args.shm_dir,
    )
    return WriterService(config, args.index, stats, options)
