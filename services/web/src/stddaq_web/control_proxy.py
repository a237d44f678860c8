"""Start and stop from the page, forwarded to the driver's REST API.

The caller's `Authorization` header goes along; the driver's answer (status code and body)
comes back unchanged, so the page shows refusals as the API words them. A driver that does
not answer is a 502 naming its address.
"""

from __future__ import annotations

import hmac

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response

MAX_BODY_BYTES = 64 * 1024


def token_of(authorization: str | None) -> str | None:
    """The bearer token of an Authorization header, None if there is none."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def token_ok(authorization: str | None, expected: str | None) -> bool:
    """True if no token is needed or the header carries the expected one."""
    if expected is None:
        return True
    given = token_of(authorization)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def forward(request: Request, driver_url: str, what: str) -> Response:
    """POST the request's body to the driver's `/api/v1/<what>`; its answer, unchanged."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return JSONResponse(
            status_code=413, content={"detail": f"the body is larger than {MAX_BODY_BYTES} bytes"}
        )
    headers = {"content-type": "application/json"}
    authorization = request.headers.get("authorization")
    if authorization:
        headers["authorization"] = authorization
    url = driver_url.rstrip("/") + f"/api/v1/{what}"
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(url, content=body or b"{}", headers=headers)
    except httpx.HTTPError as error:
        reason = str(error) or type(error).__name__
        return JSONResponse(
            status_code=502, content={"detail": f"driver at {driver_url} does not answer: {reason}"}
        )
    return Response(
        content=answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )
