"""The web application (FastAPI, as the driver): the page, its WebSocket and the control proxy.

- `GET /` the page, `/static/*` its script and style sheet;
- `GET /api/health` liveness (for the container healthcheck);
- `GET /api/state` health, acquisition status and the live image's id/age as JSON;
- `GET /api/session` whether the stack has a token and whether the caller's is right;
- `POST /api/start`, `POST /api/stop` forwarded to the driver (control_proxy.py);
- `WS /ws` status and 8-bit frames to the page, its view and probes back (page_channel.py).
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from stddaq_common.runtime.stats import Stats
from stddaq_web import __version__
from stddaq_web.control_proxy import forward, token_ok
from stddaq_web.health import HealthPoller
from stddaq_web.image_feed import ImageFeed
from stddaq_web.page_channel import PageChannel
from stddaq_web.web_context import WebContext, WebSettings

__all__ = ["WebSettings", "create_app"]


def create_app(settings: WebSettings, feed: ImageFeed | None, health: HealthPoller, stats: Stats) -> FastAPI:
    """The FastAPI application of the web service."""
    context = WebContext(settings, feed, health, stats)
    static = resources.files("stddaq_web") / "static"
    app = FastAPI(title="stddaq web", version=__version__, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.include_router(page_router(context, str(static / "index.html")))
    app.include_router(api_router(context))
    return app


def page_router(context: WebContext, index_html: str) -> APIRouter:
    """`GET /` and the page's WebSocket `/ws`."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(index_html, headers={"Cache-Control": "no-cache"})

    @router.websocket("/ws")
    async def websocket(socket: WebSocket) -> None:
        await PageChannel(context).serve(socket)

    return router


def api_router(context: WebContext) -> APIRouter:
    """`/api/health`, `/api/state`, `/api/session`, `/api/start`, `/api/stop`."""
    router = APIRouter(prefix="/api")
    settings, counters = context.settings, context.counters

    @router.get("/health")
    async def get_health() -> dict[str, Any]:
        return {"ok": True, "time": time.time(), "pages": len(context.pages)}

    @router.get("/state")
    async def get_state() -> dict[str, Any]:
        return context.state()

    @router.get("/session")
    async def session(request: Request) -> dict[str, Any]:
        ok = token_ok(request.headers.get("authorization"), settings.token)
        return {"token_required": settings.token is not None, "token_ok": ok}

    @router.post("/start")
    async def start(request: Request) -> Response:
        counters.starts.inc()
        return await forward(request, settings.driver_url, "start")

    @router.post("/stop")
    async def stop(request: Request) -> Response:
        counters.stops.inc()
        return await forward(request, settings.driver_url, "stop")

    return router
