"""The driver's web thread: one asyncio loop serving the REST API (uvicorn) and the WebSocket
port, on listeners bound at start-up (stddaq_common.runtime.server_thread)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn
from fastapi import FastAPI
from websockets.asyncio.server import serve

from stddaq_common.runtime.server_thread import ServerThread, bound_port
from stddaq_driver.ws_api import WsProtocol

WS_MAX_MESSAGE_BYTES = 64 * 1024
TICK_S = 1.0
"""uvicorn's housekeeping tick (Date header, exit check); uvicorn's own is 0.1 s."""


class QuietServer(uvicorn.Server):
    """uvicorn's Server with a tick of TICK_S instead of 100 ms (10 wake-ups a second of an
    otherwise idle thread); an exit request wakes it at once."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        """uvicorn's main loop, ticking every TICK_S (each tick refreshes the Date header)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # on_tick counts 100-ms ticks: 10 is a second
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            should_exit = await self.on_tick(counter)

    def request_exit(self) -> None:
        """Ask the server to exit (thread-safe): the main loop notices it at once."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                loop.call_soon_threadsafe(wake.set)


class WebServer(ServerThread):
    """Serves `app` on `rest_listener` and `ws` on `ws_listener` in a background thread;
    the REST connections speak `http_protocol` (default: uvicorn's h11 protocol)."""

    def __init__(
        self,
        app: FastAPI,
        ws: WsProtocol,
        rest_listener: socket.socket,
        ws_listener: socket.socket,
        *,
        http_protocol: type[asyncio.Protocol] | None = None,
    ) -> None:
        self._ws = ws
        self._rest_listener = rest_listener
        self._ws_listener = ws_listener
        self._uvicorn = QuietServer(
            uvicorn.Config(
                app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                ws="none", http=http_protocol or "auto",
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
        self._uvicorn.request_exit()

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
