"""The web thread: uvicorn serving the application on a socket bound at startup.

The socket is bound when the server object is made, so a port in use is a startup error
with a clear message before the service says READY; the asyncio loop runs in its own
thread, the service's main thread only watches it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import uvicorn
from fastapi import FastAPI

from stddaq_common.runtime.runner import StartupError

log = logging.getLogger("stddaq.web.server")


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (0: any free port); StartupError naming it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise StartupError(f"web page: cannot resolve bind address {host!r}: {error}") from None
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise StartupError(f"web page: cannot listen on {host}:{port}: {error.strerror}") from None
    listener.setblocking(False)
    return listener


class WebServer:
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
        self._thread = threading.Thread(target=self._run, name="web-http", daemon=True)
        self.failure: BaseException | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        """Start serving."""
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
        self._listener.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._uvicorn.serve(sockets=[self._listener]))
        except BaseException as error:  # reported by the service's watch loop
            self.failure = error
            log.exception("the web thread failed")
