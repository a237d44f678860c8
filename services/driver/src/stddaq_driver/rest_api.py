"""The REST API (FastAPI): the app of one driver, made of its routers.

Routes live in routers by concern: rest_acquisition (start, stop, status), rest_config
(the DAQ config), rest_service (stats, health, `/metrics`). Every handler is `async` and
never blocks: they only check, claim the start on the status board and queue a command for
the dealing thread. How refusals are answered is in rest_errors: `{"detail": ...}` naming
what was wrong; a body that does not fit the model answers 422 with FastAPI's list of
errors (`loc` names the field) plus a one-line `message`. The server serves the app over
connections that answer a plain GET /status (the request clients poll) before h11 even
parses it (`rest_protocol`, status_protocol.py); every other request reaches the app.
"""

from __future__ import annotations

from fastapi import FastAPI

from stddaq_driver import __version__
from stddaq_driver.auth import TokenAuth
from stddaq_driver.control import DriverControl
from stddaq_driver.rest_acquisition import router as acquisition_router
from stddaq_driver.rest_acquisition import status_body, status_response
from stddaq_driver.rest_config import router as config_router
from stddaq_driver.rest_errors import MAX_BODY_BYTES, install_error_handling
from stddaq_driver.rest_service import metrics_router
from stddaq_driver.rest_service import router as service_router
from stddaq_driver.status_protocol import StatusProtocol, status_protocol

__all__ = [
    "API_PREFIX", "MAX_BODY_BYTES", "create_app", "rest_protocol", "status_response"
]

API_PREFIX = "/api/v1"


def create_app(control: DriverControl, auth: TokenAuth) -> FastAPI:
    """The FastAPI application of one driver."""
    app = FastAPI(
        title="stddaq driver",
        version=__version__,
        description="Start and stop acquisitions, watch their progress, read and change "
        "the DAQ config. State-changing calls need `Authorization: Bearer <token>` when "
        "the driver was started with a token.",
    )
    app.state.control = control
    app.state.auth = auth
    install_error_handling(app)
    for router in (acquisition_router, config_router, service_router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(metrics_router)
    return app


def rest_protocol(control: DriverControl) -> type[StatusProtocol]:
    """The protocol of the REST port's connections: a plain GET /status answered at once,
    everything else handed to uvicorn's h11 protocol and the app."""
    return status_protocol(API_PREFIX + "/status", lambda: status_body(control))
