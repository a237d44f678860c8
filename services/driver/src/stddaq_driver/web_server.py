"""The web thread: one asyncio loop serving the REST API (uvicorn) and the WebSocket port.

Both listening sockets are bound when the server object is made (so a port in use is a
startup error with a clear message, before the service says READY); the loop runs in its
own thread so that nothing the web layer does can slow the image-dealing thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import uvicorn
from fastapi import FastAPI
from websockets.asyncio.server import serve

from stddaq_driver.ws_api import WsProtocol

log = logging.getLogger(__name__)

WS_MAX_MESSAGE_BYTES = 64 * 1024


class ListenError(OSError):
    """A port that cannot be bound."""


def bind_listener(host: str, port: int, what: str) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ListenError(f"{what}: cannot resolve bind address {host!r}: {error}") from None
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise ListenError(f"{what}: cannot listen on {host}:{port}: {error.strerror}") from None
    listener.setblocking(False)
    return listener


class WebServer:
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
        self._thread = threading.Thread(target=self._run, name="driver-web", daemon=True)
        self.failure: BaseException | None = None

    @property
    def rest_port(self) -> int:
        """The bound REST port."""
        return int(self._rest_listener.getsockname()[1])

    @property
    def ws_port(self) -> int:
        """The bound WebSocket port."""
        return int(self._ws_listener.getsockname()[1])

    def start(self) -> None:
        """Start serving in the web thread."""
        self._thread.start()

    def is_alive(self) -> bool:
        """True while the web thread runs."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and wait for the thread (at most `timeout` s)."""
        self._uvicorn.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the web thread did not stop within %g s", timeout)
        for listener in (self._rest_listener, self._ws_listener):
            listener.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by the service's watchdog
            self.failure = error
            log.exception("the web thread failed")

    async def _serve(self) -> None:
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
