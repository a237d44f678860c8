"""What every REST route may depend on: the driver's control, the token check, the JSON body.

The app keeps its `DriverControl` and `TokenAuth` in `app.state`; routes reach them through
these dependencies, so the routers are plain module-level objects.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stddaq_driver.auth import TokenAuth
from stddaq_driver.control import DriverControl, InvalidRequest

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="Needed when the driver has a token")


class Unauthorized(Exception):
    """A state-changing call without the right bearer token."""


def control_of(request: Request) -> DriverControl:
    """The control of the app serving this request."""
    control: DriverControl = request.app.state.control
    return control


async def _control_dependency(request: Request) -> DriverControl:
    """`control_of` as a dependency: async, so FastAPI calls it in the event loop rather
    than handing it to a worker thread (a thread hop per request)."""
    return control_of(request)


Control = Annotated[DriverControl, Depends(_control_dependency)]


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse (401) a state-changing call without the token, when the driver has one."""
    auth: TokenAuth = request.app.state.auth
    token = credentials.credentials if credentials is not None else None
    if not auth.allows_token(token):
        control_of(request).counters.auth_refused.inc()
        log.warning("refused (401): a state-changing call without the right token")
        raise Unauthorized()


GUARDED = [Depends(require_token)]
"""The dependencies of every state-changing route."""


async def json_body(request: Request, control: DriverControl) -> Any:
    """The request body as JSON; InvalidRequest naming the problem if it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as error:
        control.counters.requests_invalid.inc()
        raise InvalidRequest(f"the body is not valid JSON: {error}") from None
