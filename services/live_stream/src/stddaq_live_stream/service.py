"""Building the live stream from the config and the command line, and its entry point."""

from __future__ import annotations

import argparse
import logging
import os

from stddaq_common.bus.metadata_stream import MetadataSubscriber
from stddaq_common.config.model import DaqConfig
from stddaq_common.names import ipc_address, shm_name
from stddaq_common.ring.geometry import ring_geometry
from stddaq_common.ring.image_ring import ImageRing
from stddaq_common.runtime.stats import Stats
from stddaq_live_stream.cli import LiveStreamOptions, options_from
from stddaq_live_stream.cli import add_arguments as add_arguments  # the runner's add_arguments
from stddaq_live_stream.output_formats import Array10Format, BsreadFormat, OutputFormat
from stddaq_live_stream.rate_modes import rate_mode_for
from stddaq_live_stream.ring_source import RingSource
from stddaq_live_stream.stream_config import stream_config_for
from stddaq_live_stream.stream_loop import LiveStream
from stddaq_live_stream.viewer_socket import ViewerSocket

SERVICE_NAME = "live_stream"

STD_DAQ_SEND_HWM = 100
"""std_daq's live-stream send high-water mark (images per viewer): absorbs a burst."""

COPY_BUDGET_BYTES = 64 * 1024 * 1024
"""By default the send buffers of copied images take at most about this much memory
(images sent straight from their ring slot cost none)."""

MIN_SEND_BUFFERS = 6

SPARE_SEND_BUFFERS = 4
"""Send buffers beyond send_hwm: a stalled viewer's queue leaves these for the others."""

log = logging.getLogger("stddaq.live_stream")


def default_send_buffers(send_hwm: int, image_bytes: int) -> int:
    """send_hwm + 4 send buffers for copied images, fewer when they would exceed ~64 MiB."""
    fitting = COPY_BUDGET_BYTES // max(image_bytes, 1)
    return max(MIN_SEND_BUFFERS, min(send_hwm + SPARE_SEND_BUFFERS, fitting))


def output_format_for(options: LiveStreamOptions, config: DaqConfig) -> OutputFormat:
    """The message format `-t` asks for."""
    if options.output_type == "bsread":
        return BsreadFormat(options.bsread_channel, f"{config.detector_name}:{options.image_suffix}")
    return Array10Format()


def build(config: DaqConfig, args: argparse.Namespace, stats: Stats) -> LiveStream:
    """The live stream described by the config entry of the bind address (StartupError if none)."""
    options = options_from(args)
    stream_config = stream_config_for(config, options.stream_address, args.config)
    mode = rate_mode_for(stream_config)
    geometry = ring_geometry(config)
    send_hwm = options.send_hwm or STD_DAQ_SEND_HWM
    ring_name = shm_name(config.detector_name, options.image_suffix)
    if options.nice:
        os.nice(options.nice)

    def attach() -> ImageRing:
        return ImageRing.for_config(config, create=False, suffix=options.image_suffix, foreign=True)

    viewers = ViewerSocket(options.stream_address, send_hwm=send_hwm)
    try:
        metadata = MetadataSubscriber.for_config(config, options.metadata_suffix)
    except Exception:
        viewers.close()
        raise
    stream = LiveStream(
        metadata=metadata,
        ring_source=RingSource(f"ring /dev/shm/{ring_name}", attach),
        viewers=viewers,
        mode=mode,
        output=output_format_for(options, config),
        stats=stats,
        slot_bytes=geometry.slot_bytes,
        send_buffers=(
            default_send_buffers(send_hwm, geometry.slot_bytes)
            if options.send_buffers is None
            else options.send_buffers
        ),
    )
    log.info(
        "live stream %s: %s, %s messages, images from %s (metadata %s), send_hwm %d, nice %d, "
        "zero-copy sends through %s",
        options.stream_address, mode.describe(), options.output_type, ring_name,
        ipc_address(config.detector_name, options.metadata_suffix, config.ipc_dir), send_hwm,
        options.nice, stream.zero_copy_path,
    )
    return stream
