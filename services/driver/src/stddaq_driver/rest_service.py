"""REST routes about the driver itself: stats, health, and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stddaq_common.runtime.metrics import stats_registry
from stddaq_driver.rest_deps import Control

router = APIRouter()


@router.get("/stats", summary="Driver counters and gauges")
async def get_stats(control: Control) -> dict[str, int | float | bool | str]:
    """Every counter with its rate over the last stats period, and every gauge."""
    return control.stats()


@router.get("/health", summary="Liveness")
async def health(control: Control) -> dict[str, Any]:
    """Answers while the driver runs; lists writers not heard from recently."""
    return {"ok": True, "time": time.time(), "silent_writers": control.board.silent_writers()}


metrics_router = APIRouter()
"""Served at the root (`/metrics`), where Prometheus looks by default."""


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics of the driver",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(control: Control) -> Response:
    """The driver's counters and gauges in Prometheus' text format (the same as its
    `--metrics-port` endpoint serves)."""
    return Response(generate_latest(stats_registry(control.stats_source)), media_type=CONTENT_TYPE_LATEST)
