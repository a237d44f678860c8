"""How the REST API answers what it refuses: status codes for the control's refusals, 422
for a body that does not fit its model, 401 without the token, 413 for a huge body."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from stddaq_driver.control import (
    Conflict,
    InvalidRequest,
    NotSaved,
    PathNotAllowed,
    Refused,
    WritersNotRunning,
)
from stddaq_driver.rest_deps import Unauthorized, control_of

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
"""Larger request bodies are refused (413) before they are read."""

STATUS_OF_REFUSAL: dict[type[Refused], int] = {
    InvalidRequest: 422,
    Conflict: 409,
    PathNotAllowed: 403,
    WritersNotRunning: 503,
    NotSaved: 500,
}
"""The HTTP status code of each kind of refusal."""


def status_code_of(refusal: Refused) -> int:
    """The HTTP status code of a refusal (its class or nearest base in the table)."""
    for kind in type(refusal).__mro__:
        if kind in STATUS_OF_REFUSAL:
            return STATUS_OF_REFUSAL[kind]
    return 400


def error_message(errors: list[dict[str, Any]]) -> str:
    """`field: message; ...` of a list of validation errors."""
    parts = []
    for item in errors:
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        parts.append(f"{location or 'body'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


async def _limit_body(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        control_of(request).counters.requests_invalid.inc()
        log.warning("refused (413): body of %s bytes", length)
        return JSONResponse(
            status_code=413, content={"detail": f"the body is larger than {MAX_BODY_BYTES} bytes"}
        )
    return await call_next(request)


async def _invalid_body(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    control_of(request).counters.requests_invalid.inc()
    errors = [
        {key: value for key, value in item.items() if key in ("loc", "msg", "type")}
        for item in error.errors()
    ]
    message = error_message(errors)
    log.warning("refused (422): %s %s: %s", request.method, request.url.path, message)
    return JSONResponse(status_code=422, content={"detail": errors, "message": message})


async def _refused(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, Refused)
    if error.errors:
        content: dict[str, Any] = {"detail": error.errors, "message": error.reason}
    else:
        content = {"detail": error.reason}
    return JSONResponse(status_code=status_code_of(error), content=content)


async def _unauthorized(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(
        status_code=401,
        content={"detail": "this call needs the header Authorization: Bearer <token>"},
        headers={"WWW-Authenticate": "Bearer"},
    )


def install_error_handling(app: FastAPI) -> None:
    """The body-size limit and every exception handler of the API."""
    app.middleware("http")(_limit_body)
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(Unauthorized, _unauthorized)
