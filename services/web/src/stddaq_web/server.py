"""The web page's HTTP server: uvicorn on a listener bound at start-up, in its own thread."""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from stddaq_common.runtime.server_thread import ServerThread, bound_port


class WebServer(ServerThread):
    """Serves `app` on `listener` in a background thread."""

    def __init__(self, app: FastAPI, listener: socket.socket) -> None:
        self._listener = listener
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ws="websockets-sansio",
                ws_max_size=64 * 1024,
            )
        )
        super().__init__("web-http", self._serve_http, self._ask_exit, [listener])

    @property
    def port(self) -> int:
        """The bound port."""
        return bound_port(self._listener)

    def _ask_exit(self) -> None:
        self._uvicorn.should_exit = True

    async def _serve_http(self) -> None:
        await self._uvicorn.serve(sockets=[self._listener])
