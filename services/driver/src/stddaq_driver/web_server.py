"""The driver's web thread: one asyncio loop serving the REST API (uvicorn) and the WebSocket
port, on listeners bound at start-up (stddaq_common.runtime.server_thread)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from fastapi import FastAPI
from websockets.asyncio.server import serve

from stddaq_common.runtime.server_thread import ServerThread, bound_port
from stddaq_driver.ws_api import WsProtocol

WS_MAX_MESSAGE_BYTES = 64 * 1024


class WebServer(ServerThread):
    """Serves `app` on `rest_listener` and `ws` on `ws_listener` in a background thread."""

    def __init__(
        self,
        app: FastAPI,
        ws: WsProtocol,
        rest_listener: socket.socket,
        ws_listener: socket.socket,
    ) -> None:
        self._ws = ws
        self._rest_listener = rest_listener
        self._ws_listener = ws_listener
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(
                app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                ws="none",
            )
        )
        super().__init__("driver-web", self._serve_both, self._ask_exit, [rest_listener, ws_listener])

    @property
    def rest_port(self) -> int:
        """The bound REST port."""
        return bound_port(self._rest_listener)

    @property
    def ws_port(self) -> int:
        """The bound WebSocket port."""
        return bound_port(self._ws_listener)

    def _ask_exit(self) -> None:
        self._uvicorn.should_exit = True

    async def _serve_both(self) -> None:
        ws_server = await serve(
            self._ws.handle, sock=self._ws_listener, max_size=WS_MAX_MESSAGE_BYTES
        )
        pusher = asyncio.create_task(self._ws.push_status_forever(), name="ws-status")
        try:
            await self._uvicorn.serve(sockets=[self._rest_listener])
        finally:
            pusher.cancel()
            ws_server.close()
            await ws_server.wait_closed()
