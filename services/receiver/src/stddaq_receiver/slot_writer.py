"""Writes one IncomingFrame into its ring slot as the config's grayscale image.

Hot path (the frame already has the config's pixel type and shape): one copy from the
message into the slot, or one decompression straight into the slot. Anything else goes
through a `Conversion` (planned once per input layout and cached). Everything that can be
checked before touching the slot (shape, pixel type, value size, the size a compressed
value says it decompresses to) is checked first, so a rejected frame never writes half an
image. A compressed value that turns out corrupt while decompressing leaves its slot marked
"being written" (readers never get it) and is rejected like the others.

A write comes in two halves: `start(frame)` checks the frame and marks its slot as being
written (in the receive thread), `SlotJob.run()` fills the slot and completes it. A job
whose `parallel` is True (a decompression straight into the slot: C code that releases
the GIL) may run in a decoder thread; the others run where they are started.
"""

from __future__ import annotations

import numpy as np

from stddaq_common.ring.image_ring import ImageRing, SlotWrite
from stddaq_common.wire.bsread import ChannelSpec, decode_value_into
from stddaq_common.wire.compression import bitshuffle_lz4_header, lz4_uncompressed_size
from stddaq_common.wire.errors import SIZE, WireFormatError
from stddaq_receiver.grayscale import Conversion, FrameRejected, plan_conversion
from stddaq_receiver.inputs import IncomingFrame

_MAX_CACHED_PLANS = 64


class SlotJob:
    """One frame's slot, marked "being written": `run()` fills and completes it."""

    __slots__ = ("_channel", "_plan", "_ring", "_scratch", "_token", "frame", "parallel")

    def __init__(
        self,
        ring: ImageRing,
        token: SlotWrite,
        frame: IncomingFrame,
        plan: Conversion,
        scratch: bytearray | None,
    ) -> None:
        self._ring = ring
        self._token = token
        self._plan = plan
        self._channel: ChannelSpec | None = frame.channel
        self._scratch = scratch
        self.frame = frame
        self.parallel = frame.channel is not None and plan.is_copy
        """True when run() is a decompression straight into the slot (any thread may run it)."""

    @property
    def image_id(self) -> int:
        """The frame's image id."""
        return self.frame.image_id

    def run(self) -> int:
        """Fill the slot, mark it complete; the image's bytes.

        On failure (WireFormatError, FrameRejected or a bug) the slot stays "being
        written" (never handed out) and the error is raised.
        """
        token = self._token
        try:
            channel = self._channel
            if channel is None:
                nbytes = self._plan.convert_into(self.frame.value, token.data)
            elif self._scratch is None:
                nbytes = decode_value_into(channel, self.frame.value, token.data)
            else:
                decode_value_into(channel, self.frame.value, self._scratch)
                nbytes = self._plan.convert_into(self._scratch, token.data)
            self._ring.finish_write(token, nbytes)
        except BaseException:
            self._ring.abandon_write(token)
            raise
        return nbytes


class SlotWriter:
    """Converts frames into (height, width) images of `dtype` in the ring's slots."""

    def __init__(self, ring: ImageRing, height: int, width: int, dtype: np.dtype[np.generic]) -> None:
        self.ring = ring
        self.height = height
        self.width = width
        self.dtype = np.dtype(dtype)
        self.image_nbytes = height * width * self.dtype.itemsize
        self._plans: dict[tuple[str, tuple[int, ...]], Conversion | FrameRejected] = {}
        self._scratch: bytearray | None = None
        self._last_dtype: np.dtype[np.generic] | None = None
        self._last_shape: tuple[int, ...] = ()
        self._last_plan: Conversion | None = None

    def plan(self, frame: IncomingFrame) -> Conversion:
        """The cached conversion for the frame's layout; FrameRejected if there is none."""
        last = self._last_plan
        if last is not None and frame.dtype is self._last_dtype and frame.shape == self._last_shape:
            return last  # the same layout as the frame before (the usual case)
        key = (frame.dtype.str, frame.shape)
        plan = self._plans.get(key)
        if plan is None:
            try:
                plan = plan_conversion(frame.dtype, frame.shape, self.dtype, self.height, self.width)
            except FrameRejected as rejection:
                plan = rejection
            if len(self._plans) >= _MAX_CACHED_PLANS:
                self._plans.clear()
            self._plans[key] = plan
        if isinstance(plan, FrameRejected):
            raise plan
        self._last_dtype, self._last_shape, self._last_plan = frame.dtype, frame.shape, plan
        return plan

    def start(self, frame: IncomingFrame) -> SlotJob:
        """Check the frame and mark its slot (image_id % n_slots) as being written.

        Raises FrameRejected or WireFormatError with the slot untouched, and the ring's
        SlotBusy if a job of the same slot has not finished.
        """
        plan = self.plan(frame)
        channel = frame.channel
        scratch = None
        if channel is None:
            if len(frame.value) != plan.in_nbytes:
                raise FrameRejected(
                    "size",
                    f"value has {len(frame.value)} bytes, but {frame.dtype} {list(frame.shape)} "
                    f"needs {plan.in_nbytes}",
                )
        else:
            declared = self._decompressed_size(frame)
            if declared != plan.in_nbytes:
                raise WireFormatError(
                    f"channel {channel.name!r} value decompresses to {declared} bytes, but "
                    f"{channel.type} x {list(channel.shape)} needs {plan.in_nbytes}",
                    SIZE,
                )
            if not plan.is_copy:
                scratch = self._scratch_of(plan.in_nbytes)
        return SlotJob(self.ring, self.ring.start_write(frame.image_id), frame, plan, scratch)

    def write(self, frame: IncomingFrame) -> int:
        """Write the frame's image into slot image_id % n_slots; return the image's bytes.

        Raises FrameRejected or WireFormatError (the slot is untouched unless a
        compressed value is corrupt).
        """
        return self.start(frame).run()

    @staticmethod
    def _decompressed_size(frame: IncomingFrame) -> int:
        assert frame.channel is not None
        if frame.channel.compression == "bitshuffle_lz4":
            return bitshuffle_lz4_header(frame.value)[0]
        return lz4_uncompressed_size(frame.value)

    def _scratch_of(self, nbytes: int) -> bytearray:
        if self._scratch is None or len(self._scratch) != nbytes:
            self._scratch = bytearray(nbytes)
        return self._scratch
