"""The REST port's connections: a plain GET /status answered without h11 and ASGI.

Clients poll the status a few times a second during an acquisition, most with a new
connection per request (urllib, curl). uvicorn's h11 protocol spends about 1 ms of CPU on
such a request before the app runs (h11's parser and state machine, a task per request, the
ASGI messages), on the core that deals the images. This protocol reads the head of each
request itself. If it is exactly a plain GET of the status path (HTTP/1.1 with one Host
header, or HTTP/1.0; no body announced, no upgrade, nothing after the head), it writes the
answer itself: the bytes h11 would write for the route's response (status line, uvicorn's
`date` and `server` headers, `content-length`, `content-type: application/json`, h11's
`Connection: close` when the client closes or speaks HTTP/1.0, then the body of
`status_body`). Everything else (another path or method, a query string, a header this
reader is not sure of, a pipelined request, a head that does not end within MAX_HEAD_BYTES,
a head that ends in bare line feeds) is handed with every byte read so far to uvicorn's
H11Protocol, which owns the connection from then on: the answers there are exactly as
before.

A connection that stays open after a status answer is closed after uvicorn's keep-alive
timeout, as uvicorn does; it is listed in the server's connections so that a shutdown
closes it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

MAX_HEAD_BYTES = 8192
"""A request head not complete within this many bytes goes to h11 (which limits it)."""

_HEADER = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?[ \t]*"
)
"""One header line as h11 accepts it (token name, visible ASCII value); anything else is
left to h11."""
_NOT_PLAIN = frozenset({b"content-length", b"transfer-encoding", b"upgrade", b"expect"})
"""Headers that make a request more than a plain GET (a body, an upgrade)."""
_END = b"\r\n\r\n"
_ANY_END = re.compile(rb"\n\r?\n")
"""Where h11 sees a head end (it also takes bare line feeds): such a head goes to h11."""


def plain_get(head: bytes, target: bytes) -> bool | None:
    """Whether the client wants the connection closed after a plain GET of `target` whose
    head (request line and headers, without the blank line) is `head`; None if the request
    is anything else, or something this reader is not sure of."""
    lines = head.split(b"\r\n")
    request_line = lines[0].split(b" ")
    if len(request_line) != 3 or request_line[0] != b"GET" or request_line[1] != target:
        return None
    version = request_line[2]
    if version == b"HTTP/1.1":
        close = False
    elif version == b"HTTP/1.0":
        close = True
    else:
        return None
    hosts = 0
    for line in lines[1:]:
        match = _HEADER.fullmatch(line)
        if match is None:
            return None
        name = match.group(1).lower()
        if name in _NOT_PLAIN:
            return None
        if name == b"host":
            hosts += 1
        elif name == b"connection":
            value = match.group(2) or b""
            if b"close" in (token.strip().lower() for token in value.split(b",")):
                close = True
    if hosts > 1 or (hosts == 0 and version == b"HTTP/1.1"):
        return None
    return close


def status_answer(body: bytes, default_headers: list[tuple[bytes, bytes]], close: bool) -> bytes:
    """The response as h11 writes it for the route's answer (uvicorn's default headers
    first, then the route's, then h11's `Connection: close` if the connection closes)."""
    headers = [
        *default_headers,
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
    ]
    if close:
        headers.append((b"Connection", b"close"))
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n" + body


class StatusProtocol(asyncio.Protocol):
    """One REST connection: status GETs answered here, anything else handed to h11."""

    status_path: bytes = b""
    status_body: Callable[[], bytes] = staticmethod(lambda: b"")

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._args = (config, server_state, app_state, _loop)
        self._state = server_state
        self._keep_alive_s = config.timeout_keep_alive
        self._loop = _loop or asyncio.get_event_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A client connected."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._state.connections.add(self)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed (while this protocol had it)."""
        self._state.connections.discard(self)  # type: ignore[arg-type]
        self._cancel_idle()
        if self._transport is not None:
            self._transport.close()

    def eof_received(self) -> bool | None:
        """The client closed its side: close ours (nothing is pending here)."""
        return None

    def shutdown(self) -> None:
        """The server stops (uvicorn calls this for every connection): nothing is under
        way here, so close."""
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        """Bytes from the client: answer a plain status GET, or hand the connection to h11."""
        self._cancel_idle()
        buffer = self._buffer + data if self._buffer else data
        end = buffer.find(_END)
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES or _ANY_END.search(buffer):
                self._hand_over(buffer)
            else:
                self._buffer = buffer
            return
        self._buffer = b""
        close = plain_get(buffer[:end], self.status_path) if end + 4 == len(buffer) else None
        if close is None:
            self._hand_over(buffer)
            return
        try:
            body = type(self).status_body()
        except Exception:  # the app's route meets the same problem and answers it
            self._hand_over(buffer)
            return
        transport = self._transport
        assert transport is not None
        self._state.total_requests += 1
        transport.write(status_answer(body, self._state.default_headers, close))
        if close:
            transport.close()
        else:
            self._idle_timer = self._loop.call_later(self._keep_alive_s, self.shutdown)

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _hand_over(self, received: bytes) -> None:
        """uvicorn's h11 protocol takes the connection, starting with `received`."""
        transport = self._transport
        assert transport is not None
        self._state.connections.discard(self)  # type: ignore[arg-type]
        h11 = H11Protocol(*self._args)
        transport.set_protocol(h11)
        h11.connection_made(transport)
        h11.data_received(received)


def status_protocol(status_path: str, status_body: Callable[[], bytes]) -> type[StatusProtocol]:
    """The protocol class for uvicorn's `http` setting, answering GET `status_path` with
    `status_body()`."""
    return type(
        "BoundStatusProtocol",
        (StatusProtocol,),
        {"status_path": status_path.encode(), "status_body": staticmethod(status_body)},
    )
