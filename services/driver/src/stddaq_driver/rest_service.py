"""REST routes about the driver itself: stats, health, and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from stddaq_common.runtime.metrics import METRICS_CONTENT_TYPE, metrics_text
from stddaq_driver.rest_deps import Control

router = APIRouter()


@router.get("/stats", summary="Driver counters and gauges")
async def get_stats(control: Control) -> dict[str, int | float | bool | str]:
    """Every counter with its rate over the last stats period, and every gauge."""
    return control.stats()


@router.get("/health", summary="Liveness")
async def health(control: Control) -> dict[str, Any]:
    """Answers while the driver runs; lists writers not heard from recently and the
    services it sees down (`receiver`, `writer-K`)."""
    silent = control.board.silent_writers()
    receiver_down = control.liveness()[1].alive is False
    down = (["receiver"] if receiver_down else []) + [f"writer-{k}" for k in silent]
    return {"ok": True, "time": time.time(), "silent_writers": silent, "down": down}


metrics_router = APIRouter()
"""Served at the root (`/metrics`), where Prometheus looks by default."""


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics of the driver",
    response_class=Response,
    responses={200: {"content": {METRICS_CONTENT_TYPE: {}}}},
)
async def metrics(control: Control) -> Response:
    """The driver's counters and gauges in Prometheus' text format (the same as its
    `--metrics-port` endpoint serves)."""
    return Response(metrics_text(control.stats_source), media_type=METRICS_CONTENT_TYPE)
