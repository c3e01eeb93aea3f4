"""Liveness/readiness and Prometheus metrics: the only endpoints without an API key."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from leadbot.db.session import get_engine

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/health", responses={503: {"description": "The database is not reachable"}})
def health() -> JSONResponse:
    """200 when the process runs and the database answers; 503 otherwise (for load balancers)."""
    try:
        with get_engine().connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        logger.warning("health: database unreachable: %s", type(exc).__name__)
        return JSONResponse({"status": "degraded", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
