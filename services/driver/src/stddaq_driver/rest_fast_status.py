"""GET /status without FastAPI's routing and middleware: the request clients poll.

A GUI or a benchmark asks for the status a few times a second during an acquisition. Through
FastAPI each request passes the body-size middleware (a BaseHTTPMiddleware: a task and a
memory stream per request), the exception middlewares, the router, and the dependency of
the control (run in a worker thread); that was about 1-2 ms of CPU per request, on the same
core that deals the images. The status body itself costs some 25 microseconds.

`FastStatus` sits in front of the FastAPI app. It answers a plain `GET <prefix>/status`
(no request body announced) itself with the same bytes the route answers: the body the
route builds (`status_body`, rest_acquisition.py), then `content-length` and
`content-type: application/json` in the route's order; uvicorn adds its `date` and `server`
headers to every response either way.
Everything else goes to the FastAPI app unchanged: every other route and method, a GET that
announces a body (the size limit and FastAPI decide about it), and a status that could not
be built (FastAPI answers that error as before). The route stays in the app, so the OpenAPI
document does not change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from stddaq_driver.control import DriverControl
from stddaq_driver.rest_acquisition import status_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODY_HEADERS = (b"content-length", b"transfer-encoding")
_JSON = b"application/json"


def announces_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """True if the request's headers announce a body (Content-Length or Transfer-Encoding)."""
    return any(name in _BODY_HEADERS for name, _ in headers)


class FastStatus:
    """An ASGI app: answers a plain GET of `status_path` itself, hands the rest to `app`."""

    def __init__(self, app: AsgiApp, control: DriverControl, status_path: str) -> None:
        self.app = app
        self._control = control
        self._path = status_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if (
            scope["type"] == "http"
            and scope["path"] == self._path
            and scope["method"] == "GET"
            and not announces_body(scope["headers"])
        ):
            try:
                body = status_body(self._control)
            except Exception:  # the app's route meets the same problem and answers it
                pass
            else:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-length", str(len(body)).encode()),
                            (b"content-type", _JSON),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
