"""REST routes of the DAQ config: read, replace, change some fields."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from stddaq_common.config.model import DaqConfig
from stddaq_driver.models import ConfigUpdateResponse
from stddaq_driver.rest_acquisition import REFUSALS
from stddaq_driver.rest_deps import GUARDED, Control, json_body

router = APIRouter()

_INVALID: dict[int | str, dict[str, Any]] = {422: {"description": "Invalid config, fields named"}}


@router.get("/config", response_model=DaqConfig, summary="The DAQ config")
async def get_config(control: Control) -> dict[str, Any]:
    """The config in use (defaults filled in)."""
    return control.config.model_dump(mode="json")


@router.put(
    "/config",
    response_model=ConfigUpdateResponse,
    dependencies=GUARDED,
    summary="Replace the DAQ config",
    responses={**REFUSALS, **_INVALID},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/DaqConfig"}}
            },
        }
    },
)
async def put_config(request: Request, control: Control) -> ConfigUpdateResponse:
    """Validate and use a whole new config (detector_name and detector_type cannot
    change); saved to the config file unless the driver runs with --no-save-config."""
    new_config = control.replace_config(await json_body(request, control))
    return ConfigUpdateResponse(
        saved_to=control.config_saved_to, config=new_config.model_dump(mode="json")
    )


@router.patch(
    "/config",
    response_model=ConfigUpdateResponse,
    dependencies=GUARDED,
    summary="Change some fields of the DAQ config",
    responses={**REFUSALS, **_INVALID},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def patch_config(request: Request, control: Control) -> ConfigUpdateResponse:
    """Merge these fields into the config, then validate and use it as PUT does."""
    new_config = control.update_config(await json_body(request, control))
    return ConfigUpdateResponse(
        saved_to=control.config_saved_to, config=new_config.model_dump(mode="json")
    )
