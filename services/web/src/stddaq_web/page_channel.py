"""One page's WebSocket: its messages in (ack, view, probe), status and 8-bit frames out.

A status message goes once a second; a frame at most `fps` times a second and one at a
time: the next goes only after the page has drawn the last (it sends `ack`), so a slow
page gets fewer frames and costs nothing else. A frame not acknowledged after
`ACK_TIMEOUT_S` is taken as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from stddaq_web.frame_message import encode_frame
from stddaq_web.image_feed import LatestImage
from stddaq_web.render import View, pixel_at, render
from stddaq_web.web_context import WebContext

STATUS_EVERY_S = 1.0
TICK_S = 0.02
"""How often a page's sender looks for a new image, an acknowledgement or a view change."""
ACK_TIMEOUT_S = 5.0
"""A frame the page has not acknowledged after this long is taken as lost."""


class PageChannel:
    """The state of one connected page and what it is sent."""

    def __init__(self, context: WebContext) -> None:
        self._context = context
        self.view = View()
        self.view_version = 1
        self.drawn_version = 0
        self.sent_sequence = 0
        self.waiting_since: float | None = None

    async def serve(self, socket: WebSocket) -> None:
        """Accept the page, answer its messages and send to it until it goes away."""
        context = self._context
        await socket.accept()
        context.page_opened(id(self))
        sender = asyncio.create_task(self._send_forever(socket))
        try:
            while True:
                reply = self.handle(await socket.receive_text())
                if reply is not None:
                    await socket.send_text(json.dumps(reply))
        except (WebSocketDisconnect, RuntimeError, KeyError):  # gone, or sent bytes
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            context.page_closed(id(self))

    def handle(self, text: str) -> dict[str, Any] | None:
        """One message from the page; the reply to send (None: none)."""
        try:
            message = json.loads(text)
            if not isinstance(message, dict):
                raise ValueError("a message must be a JSON object")
            kind = message.get("type")
            if kind == "ack":
                self.waiting_since = None
                return None
            if kind == "view":
                self.view = View.from_message(message)
                self.view_version += 1
                return None
            if kind == "probe":
                return self._probe(int(message["x"]), int(message["y"]))
            raise ValueError(f"unknown message type {kind!r}")
        except (ValueError, KeyError, TypeError) as error:
            self._context.counters.bad_messages.inc()
            return {"type": "error", "detail": f"message not understood: {error}"}

    def _probe(self, x: int, y: int) -> dict[str, Any]:
        latest = self._context.latest
        value = pixel_at(latest.pixels, x, y) if latest is not None else None
        image_id = latest.image_id if latest is not None else None
        return {"type": "probe", "x": x, "y": y, "value": value, "image_id": image_id}

    async def _send_forever(self, socket: WebSocket) -> None:
        context, counters = self._context, self._context.counters
        loop = asyncio.get_running_loop()
        next_status = 0.0
        interval = 1.0 / context.settings.fps
        tick = min(TICK_S, interval / 4)
        next_frame = 0.0
        while True:
            now = time.monotonic()
            if now >= next_status:
                await socket.send_text(json.dumps(context.state()))
                next_status = now + STATUS_EVERY_S
            if self.waiting_since is not None and now - self.waiting_since > ACK_TIMEOUT_S:
                self.waiting_since = None
            latest = context.latest
            fresh = latest is not None and (
                latest.sequence != self.sent_sequence or self.view_version != self.drawn_version
            )
            if latest is not None and fresh and self.waiting_since is None and now >= next_frame:
                view, version = self.view, self.view_version
                started = time.perf_counter()
                message = await loop.run_in_executor(None, frame_message, latest, view)
                counters.render_us.set(int((time.perf_counter() - started) * 1e6))
                self.sent_sequence, self.drawn_version = latest.sequence, version
                self.waiting_since = time.monotonic()
                next_frame = now + interval * 0.9
                await socket.send_bytes(message)
                counters.frames_sent.inc()
                counters.frame_bytes.inc(len(message))
            await asyncio.sleep(tick)


def frame_message(latest: LatestImage, view: View) -> bytes:
    """The binary frame message of `latest` rendered for `view`."""
    frame = render(latest.pixels, view)
    rows, columns = latest.pixels.shape
    header = frame.header()
    header.update(
        image_id=latest.image_id,
        shape=[rows, columns],
        dtype=str(latest.pixels.dtype),
        age_s=round(time.time() - latest.received_at, 3),
    )
    return encode_frame(header, frame.pixels)
