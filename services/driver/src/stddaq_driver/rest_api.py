"""The REST API (FastAPI): start, stop, status, config, stats.

Every handler is `async` and never blocks: they only check, claim the start on the status
board and queue a command for the dealing thread. Refusals answer with `{"detail": ...}`
naming what was wrong; a body that does not fit the model answers 422 with FastAPI's
list of errors (`loc` names the field) plus a one-line `message`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stddaq_common.config.model import DaqConfig
from stddaq_driver import __version__
from stddaq_driver.auth import TokenAuth
from stddaq_driver.control import DriverControl, Refused
from stddaq_driver.models import (
    ConfigUpdateResponse,
    ErrorResponse,
    StartRequest,
    StartResponse,
    StatusResponse,
    WriterStatus,
)
from stddaq_driver.status_board import WRITER_ALIVE_S, AcquisitionSnapshot

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 1 << 20
"""Larger request bodies are refused (413) before they are read."""

_bearer = HTTPBearer(auto_error=False, description="Needed when the driver has a token")

_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token"},
    409: {"model": ErrorResponse, "description": "Busy, or a conflicting request"},
}


def status_response(snapshot: AcquisitionSnapshot, ages: list[float | None]) -> StatusResponse:
    """The REST status body of a snapshot (writer ages: seconds since heard, None: never)."""
    writers = []
    for writer in snapshot.writers:
        age = ages[writer.index] if writer.index < len(ages) else None
        writers.append(
            WriterStatus(
                index=writer.index,
                alive=age is not None and age <= WRITER_ALIVE_S,
                seconds_since_heard=None if age is None else round(age, 3),
                state=writer.state,
                images_written=writer.images_written,
                images_not_written=writer.images_not_written,
                bytes_written=writer.bytes_written,
                last_error=writer.last_error,
            )
        )
    return StatusResponse(
        state=snapshot.state,
        acquisition_id=snapshot.acquisition_id,
        busy=snapshot.state != "idle",
        path=snapshot.path,
        file_prefix=snapshot.file_prefix,
        n_image=snapshot.n_image,
        compression=snapshot.compression,  # type: ignore[arg-type]
        files=list(snapshot.files),
        master_file=snapshot.master_file,
        images_dealt=snapshot.images_dealt,
        images_written=snapshot.images_written,
        images_missing=snapshot.images_missing,
        id_gaps=snapshot.id_gaps,
        images_not_written=snapshot.images_not_written,
        missing_ids=list(snapshot.missing_ids),
        first_image_id=snapshot.first_image_id,
        last_image_id=snapshot.last_image_id,
        bytes_written=snapshot.bytes_written,
        started_at=snapshot.started_at,
        finished_at=snapshot.finished_at,
        outcome=snapshot.outcome,  # type: ignore[arg-type]
        last_error=snapshot.last_error,
        writers=writers,
    )


def _error_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for item in errors:
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        parts.append(f"{location or 'body'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(control: DriverControl, auth: TokenAuth) -> FastAPI:
    """The FastAPI application of one driver."""
    app = FastAPI(
        title="stddaq driver",
        version=__version__,
        description="Start and stop acquisitions, watch their progress, read and change "
        "the DAQ config. State-changing calls need `Authorization: Bearer <token>` when "
        "the driver was started with a token.",
    )

    @app.middleware("http")
    async def _limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            control.counters.requests_invalid.inc()
            log.warning("refused (413): body of %s bytes", length)
            return JSONResponse(
                status_code=413,
                content={"detail": f"the body is larger than {MAX_BODY_BYTES} bytes"},
            )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        control.counters.requests_invalid.inc()
        errors = [
            {key: value for key, value in item.items() if key in ("loc", "msg", "type")}
            for item in error.errors()
        ]
        message = _error_message(errors)
        log.warning("refused (422): %s %s: %s", request.method, request.url.path, message)
        return JSONResponse(status_code=422, content={"detail": errors, "message": message})

    @app.exception_handler(Refused)
    async def _refused(request: Request, error: Refused) -> JSONResponse:
        if error.errors:
            content: dict[str, Any] = {"detail": error.errors, "message": error.reason}
        else:
            content = {"detail": error.reason}
        return JSONResponse(status_code=error.status_code, content=content)

    async def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        token = credentials.credentials if credentials is not None else None
        if not auth.allows_token(token):
            control.counters.auth_refused.inc()
            log.warning("refused (401): a state-changing call without the right token")
            raise _Unauthorized()

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(request: Request, error: _Unauthorized) -> JSONResponse:
        return JSONResponse(
            status_code=401,
            content={"detail": "this call needs the header Authorization: Bearer <token>"},
            headers={"WWW-Authenticate": "Bearer"},
        )

    guarded = [Depends(require_token)]

    @app.post(
        f"{API_PREFIX}/start",
        response_model=StartResponse,
        dependencies=guarded,
        summary="Start an acquisition",
        responses={
            **_REFUSALS,
            403: {"model": ErrorResponse, "description": "Path outside the allowed roots"},
            503: {"model": ErrorResponse, "description": "Writers not running"},
        },
    )
    async def start(request: StartRequest) -> StartResponse:
        """Write the next images published after this call to
        `<path>/<file_prefix><k>.h5` (k = writer index)."""
        snapshot = control.start(request)
        return StartResponse(
            acquisition_id=snapshot.acquisition_id,
            state=snapshot.state,
            files=list(snapshot.files),
            master_file=snapshot.master_file,
        )

    @app.post(
        f"{API_PREFIX}/stop",
        response_model=StatusResponse,
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=guarded,
        summary="Stop the running acquisition",
        responses=_REFUSALS,
    )
    async def stop() -> StatusResponse:
        """Stop dealing images; the files are closed with what was written (state goes
        stop -> saving_file -> file_saved -> idle)."""
        return status_response(control.stop(), control.board.writer_ages())

    @app.get(f"{API_PREFIX}/status", response_model=StatusResponse, summary="Acquisition status")
    async def get_status() -> StatusResponse:
        """State, progress and files of the running (or last) acquisition."""
        return status_response(control.status(), control.board.writer_ages())

    @app.get(f"{API_PREFIX}/config", response_model=DaqConfig, summary="The DAQ config")
    async def get_config() -> dict[str, Any]:
        """The config in use (defaults filled in)."""
        return control.config.model_dump(mode="json")

    config_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DaqConfig"}}},
        }
    }

    @app.put(
        f"{API_PREFIX}/config",
        response_model=ConfigUpdateResponse,
        dependencies=guarded,
        summary="Replace the DAQ config",
        responses={**_REFUSALS, 422: {"description": "Invalid config, fields named"}},
        openapi_extra=config_body,
    )
    async def put_config(request: Request) -> ConfigUpdateResponse:
        """Validate and use a whole new config (detector_name and detector_type cannot
        change); saved to the config file unless the driver runs with --no-save-config."""
        new_config = control.replace_config(await _json_body(request, control))
        return ConfigUpdateResponse(
            saved_to=control.config_saved_to, config=new_config.model_dump(mode="json")
        )

    @app.patch(
        f"{API_PREFIX}/config",
        response_model=ConfigUpdateResponse,
        dependencies=guarded,
        summary="Change some fields of the DAQ config",
        responses={**_REFUSALS, 422: {"description": "Invalid config, fields named"}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def patch_config(request: Request) -> ConfigUpdateResponse:
        """Merge these fields into the config, then validate and use it as PUT does."""
        new_config = control.update_config(await _json_body(request, control))
        return ConfigUpdateResponse(
            saved_to=control.config_saved_to, config=new_config.model_dump(mode="json")
        )

    @app.get(f"{API_PREFIX}/stats", summary="Driver counters and gauges")
    async def get_stats() -> dict[str, int | float | bool | str]:
        """Every counter with its rate over the last stats period, and every gauge."""
        return control.stats()

    @app.get(f"{API_PREFIX}/health", summary="Liveness")
    async def health() -> dict[str, Any]:
        """Answers while the driver runs; lists writers not heard from recently."""
        return {"ok": True, "time": time.time(), "silent_writers": control.board.silent_writers()}

    return app


class _Unauthorized(Exception):
    """A state-changing call without the right bearer token."""


async def _json_body(request: Request, control: DriverControl) -> Any:
    """The request body as JSON; 422 naming the problem if it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as error:
        control.counters.requests_invalid.inc()
        raise Refused(422, f"the body is not valid JSON: {error}") from None
