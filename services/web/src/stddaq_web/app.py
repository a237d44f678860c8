"""The web application (FastAPI, as the driver): the page, its WebSocket and the control proxy.

- `GET /` the page, `/static/*` its script and style sheet;
- `GET /api/health` liveness (for the container healthcheck);
- `GET /api/state` health, acquisition status and the live image's id/age as JSON;
- `GET /api/session` whether the stack has a token and whether the caller's is right;
- `POST /api/start`, `POST /api/stop` forwarded to the driver's REST API with the caller's
  `Authorization` header; the driver's answer (status code and body) comes back unchanged,
  so the page shows refusals as the API words them;
- `WS /ws` pushes a status message once a second and 8-bit frames (frame_message.py) at
  most `fps` times a second, one at a time: the next frame goes only after the page has
  drawn the last (it sends `ack`), so a slow page gets fewer frames and costs nothing else.
  The page sends `view` (region, canvas size, contrast) and `probe` (a pixel's value).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import httpx
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from stddaq_common.runtime.stats import Stats
from stddaq_web import __version__
from stddaq_web.frame_message import encode_frame
from stddaq_web.health import HealthPoller
from stddaq_web.image_feed import ImageFeed
from stddaq_web.render import View, pixel_at, render

log = logging.getLogger("stddaq.web")

STATUS_EVERY_S = 1.0
TICK_S = 0.02
"""How often a page's sender looks for a new image, an acknowledgement or a view change."""
ACK_TIMEOUT_S = 5.0
"""A frame the page has not acknowledged after this long is taken as lost."""
MAX_BODY_BYTES = 64 * 1024


@dataclass
class WebSettings:
    """What the application needs to know."""

    detector: str
    driver_url: str
    stream: str | None
    token: str | None = None
    fps: float = 5.0
    notes: list[str] = field(default_factory=list)


@dataclass
class _Page:
    """One connected page."""

    view: View = field(default_factory=View)
    view_version: int = 1
    drawn_version: int = 0
    sent_sequence: int = 0
    waiting_since: float | None = None


class WebCounters:
    """The web service's own counters."""

    def __init__(self, stats: Stats) -> None:
        self.pages = stats.gauge("pages", "pages connected now", initial=0)
        self.frames_sent = stats.counter("frames_sent", "8-bit frames sent to pages")
        self.frame_bytes = stats.counter("frame_bytes", "bytes of frames sent to pages")
        self.render_us = stats.gauge("last_render_us", "time to prepare the last frame", initial=0)
        self.bad_messages = stats.counter("bad_messages", "page messages that were not understood")
        self.starts = stats.counter("starts_forwarded", "start requests forwarded to the driver")
        self.stops = stats.counter("stops_forwarded", "stop requests forwarded to the driver")


def token_of(authorization: str | None) -> str | None:
    """The bearer token of an Authorization header, None if there is none."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def create_app(settings: WebSettings, feed: ImageFeed | None, health: HealthPoller, stats: Stats) -> FastAPI:
    """The FastAPI application of the web service."""
    app = FastAPI(title="stddaq web", version=__version__, docs_url=None, redoc_url=None)
    counters = WebCounters(stats)
    static = resources.files("stddaq_web") / "static"
    pages: set[int] = set()

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(static / "index.html"), headers={"Cache-Control": "no-cache"})

    def image_info() -> dict[str, Any]:
        latest = feed.latest if feed is not None else None
        info: dict[str, Any] = {
            "stream": settings.stream,
            "received": feed.received if feed is not None else 0,
            "last_error": feed.last_error if feed is not None else None,
        }
        if latest is not None:
            rows, columns = latest.pixels.shape
            info.update(
                image_id=latest.image_id,
                shape=[rows, columns],
                dtype=str(latest.pixels.dtype),
                age_s=round(time.time() - latest.received_at, 3),
            )
        return info

    def state() -> dict[str, Any]:
        return {
            "type": "status",
            "detector": settings.detector,
            "version": __version__,
            "health": health.snapshot(),
            "image": image_info(),
            "pages": len(pages),
            "token_required": settings.token is not None,
            "notes": settings.notes,
        }

    @app.get("/api/health")
    async def get_health() -> dict[str, Any]:
        return {"ok": True, "time": time.time(), "pages": len(pages)}

    @app.get("/api/state")
    async def get_state() -> dict[str, Any]:
        return state()

    @app.get("/api/session")
    async def session(request: Request) -> dict[str, Any]:
        given = token_of(request.headers.get("authorization"))
        expected = settings.token
        ok = expected is None or (
            given is not None and hmac.compare_digest(given.encode(), expected.encode())
        )
        return {"token_required": expected is not None, "token_ok": ok}

    async def forward(request: Request, what: str) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse(
                status_code=413, content={"detail": f"the body is larger than {MAX_BODY_BYTES} bytes"}
            )
        headers = {"content-type": "application/json"}
        authorization = request.headers.get("authorization")
        if authorization:
            headers["authorization"] = authorization
        url = settings.driver_url.rstrip("/") + f"/api/v1/{what}"
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.post(url, content=body or b"{}", headers=headers)
        except httpx.HTTPError as error:
            return JSONResponse(
                status_code=502,
                content={"detail": f"driver at {settings.driver_url} does not answer: {_describe(error)}"},
            )
        return Response(
            content=answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type", "application/json"),
        )

    @app.post("/api/start")
    async def start(request: Request) -> Response:
        counters.starts.inc()
        return await forward(request, "start")

    @app.post("/api/stop")
    async def stop(request: Request) -> Response:
        counters.stops.inc()
        return await forward(request, "stop")

    @app.websocket("/ws")
    async def websocket(socket: WebSocket) -> None:
        await socket.accept()
        page = _Page()
        pages.add(id(page))
        counters.pages.set(len(pages))
        sender = asyncio.create_task(_send_forever(socket, page))
        try:
            while True:
                text = await socket.receive_text()
                reply = _handle(text, page)
                if reply is not None:
                    await socket.send_text(json.dumps(reply))
        except (WebSocketDisconnect, RuntimeError, KeyError):  # gone, or sent bytes
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            pages.discard(id(page))
            counters.pages.set(len(pages))

    def _handle(text: str, page: _Page) -> dict[str, Any] | None:
        try:
            message = json.loads(text)
            if not isinstance(message, dict):
                raise ValueError("a message must be a JSON object")
            kind = message.get("type")
            if kind == "ack":
                page.waiting_since = None
                return None
            if kind == "view":
                page.view = View.from_message(message)
                page.view_version += 1
                return None
            if kind == "probe":
                latest = feed.latest if feed is not None else None
                x, y = int(message["x"]), int(message["y"])
                value = pixel_at(latest.pixels, x, y) if latest is not None else None
                return {
                    "type": "probe",
                    "x": x,
                    "y": y,
                    "value": value,
                    "image_id": latest.image_id if latest is not None else None,
                }
            raise ValueError(f"unknown message type {kind!r}")
        except (ValueError, KeyError, TypeError) as error:
            counters.bad_messages.inc()
            return {"type": "error", "detail": f"message not understood: {error}"}

    async def _send_forever(socket: WebSocket, page: _Page) -> None:
        loop = asyncio.get_running_loop()
        next_status = 0.0
        interval = 1.0 / settings.fps
        tick = min(TICK_S, interval / 4)
        next_frame = 0.0
        while True:
            now = time.monotonic()
            if now >= next_status:
                await socket.send_text(json.dumps(state()))
                next_status = now + STATUS_EVERY_S
            if page.waiting_since is not None and now - page.waiting_since > ACK_TIMEOUT_S:
                page.waiting_since = None
            latest = feed.latest if feed is not None else None
            fresh = latest is not None and (
                latest.sequence != page.sent_sequence or page.view_version != page.drawn_version
            )
            if latest is not None and fresh and page.waiting_since is None and now >= next_frame:
                view, version = page.view, page.view_version
                started = time.perf_counter()
                message = await loop.run_in_executor(None, _frame_message, latest, view)
                counters.render_us.set(int((time.perf_counter() - started) * 1e6))
                page.sent_sequence, page.drawn_version = latest.sequence, version
                page.waiting_since = time.monotonic()
                next_frame = now + interval * 0.9
                await socket.send_bytes(message)
                counters.frames_sent.inc()
                counters.frame_bytes.inc(len(message))
            await asyncio.sleep(tick)

    return app


def _frame_message(latest: Any, view: View) -> bytes:
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


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__
