"""REST routes of the acquisition: start, stop, status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from fastapi.responses import Response

from stddaq_driver.control import DriverControl
from stddaq_driver.models import (
    ErrorResponse,
    ReceiverStatus,
    StartRequest,
    StartResponse,
    StatusResponse,
    WriterStatus,
)
from stddaq_driver.receiver_watch import ReceiverView
from stddaq_driver.rest_deps import GUARDED, Control
from stddaq_driver.status_board import WRITER_ALIVE_S, AcquisitionSnapshot

REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token"},
    409: {"model": ErrorResponse, "description": "Busy, or a conflicting request"},
}
"""The refusals every state-changing route documents."""

router = APIRouter()


def status_response(
    snapshot: AcquisitionSnapshot,
    ages: list[float | None],
    receiver: ReceiverView | None = None,
    metadata_age: float | None = None,
) -> StatusResponse:
    """The REST status body of a snapshot (writer ages: seconds since heard, None: never;
    the receiver as seen and the seconds since metadata came, if known)."""
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
                images_flushed=writer.images_flushed,
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
        receiver=None if receiver is None else ReceiverStatus(
            alive=receiver.alive,
            address=receiver.address,
            seconds_since_metadata=None if metadata_age is None else round(metadata_age, 3),
            problem=receiver.problem,
        ),
        down=down_services(receiver, writers),
    )


def status_body(control: DriverControl) -> bytes:
    """The body of GET /status: the current snapshot with the liveness seen now."""
    return status_response(control.status(), *control.liveness()).model_dump_json().encode()


def down_services(receiver: ReceiverView | None, writers: list[WriterStatus]) -> list[str]:
    """Names of the services the driver sees down (as `stddaq up` and Compose name them)."""
    down = ["receiver"] if receiver is not None and receiver.alive is False else []
    return down + [f"writer-{writer.index}" for writer in writers if not writer.alive]


@router.post(
    "/start",
    response_model=StartResponse,
    dependencies=GUARDED,
    summary="Start an acquisition",
    responses={
        **REFUSALS,
        403: {"model": ErrorResponse, "description": "Path outside the allowed roots"},
        503: {"model": ErrorResponse, "description": "Writers not running"},
    },
)
async def start(request: StartRequest, control: Control) -> StartResponse:
    """Write the next images published after this call to
    `<path>/<file_prefix><k>.h5` (k = writer index)."""
    snapshot = control.start(request)
    return StartResponse(
        acquisition_id=snapshot.acquisition_id,
        state=snapshot.state,
        files=list(snapshot.files),
        master_file=snapshot.master_file,
    )


@router.post(
    "/stop",
    response_model=StatusResponse,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=GUARDED,
    summary="Stop the running acquisition",
    responses=REFUSALS,
)
async def stop(control: Control) -> StatusResponse:
    """Stop dealing images; the files are closed with what was written (state goes
    stop -> saving_file -> file_saved -> idle)."""
    return status_response(control.stop(), *control.liveness())


@router.get("/status", response_model=StatusResponse, summary="Acquisition status")
async def get_status(control: Control) -> Response:
    """State, progress and files of the running (or last) acquisition."""
    # Serialised here, once: FastAPI would validate the model again and encode it through
    # jsonable_encoder. A plain GET is answered before h11 and the app (status_protocol.py), with
    # the same body and headers as this route's.
    return Response(status_body(control), media_type="application/json")
