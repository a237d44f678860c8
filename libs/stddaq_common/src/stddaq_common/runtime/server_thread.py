"""A service's network server in its own thread: listeners bound at start-up, one asyncio loop.

Sockets are bound before the service says READY, so a port in use is a start-up error
naming the port; the asyncio loop runs in a thread of its own, so nothing the web layer does
can slow the thread that moves images. The driver (REST + WebSocket) and the web page use it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from stddaq_common.runtime.runner import StartupError

log = logging.getLogger(__name__)


def bind_listener(host: str, port: int, what: str) -> socket.socket:
    """A non-blocking listening TCP socket on host:port (port 0: any free port).

    StartupError naming `what`, the address and the reason if it cannot be bound."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise StartupError(f"{what}: cannot resolve bind address {host!r}: {error}") from None
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise StartupError(f"{what}: cannot listen on {host}:{port}: {error.strerror}") from None
    listener.setblocking(False)
    return listener


def bound_port(listener: socket.socket) -> int:
    """The port a listener is bound to."""
    return int(listener.getsockname()[1])


class ServerThread:
    """Runs `serve()` in its own thread and asyncio loop; `stop()` calls `request_exit()`,
    waits for the thread and closes the listeners. A failure is kept in `failure` for the
    service's watch loop."""

    def __init__(
        self,
        name: str,
        serve: Callable[[], Coroutine[Any, Any, None]],
        request_exit: Callable[[], None],
        listeners: list[socket.socket],
    ) -> None:
        self._serve = serve
        self._request_exit = request_exit
        self._listeners = listeners
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.failure: BaseException | None = None

    def start(self) -> None:
        """Start serving in the thread."""
        self._thread.start()

    def is_alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the server to exit, wait for the thread (at most `timeout` s), close the listeners."""
        self._request_exit()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the %s thread did not stop within %g s", self._thread.name, timeout)
        for listener in self._listeners:
            listener.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by the service's watch loop
            self.failure = error
            log.exception("the %s thread failed", self._thread.name)
