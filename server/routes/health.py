"""`/healthz`: each dependency's status, 200 when all answer and 503 when one does not."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from server.deps import ResourcesDep
from server.request_context import current_request_id
from server.resources import Resources

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])
PING_TIMEOUT_S = 3.0


class DependencyStatus(BaseModel):
    """How one dependency answered."""

    status: Literal["ok", "down"]
    kind: str
    latency_ms: float | None = None
    error: str | None = None


class Health(BaseModel):
    """The server's health: `ok` when every dependency answered."""

    status: Literal["ok", "degraded"]
    dependencies: dict[str, DependencyStatus]


def _down(name: str, kind: str, error: Exception) -> DependencyStatus:
    """`down`, naming the kind of failure only: its text (hosts, users, URLs) goes to the log."""
    request_id = current_request_id()
    log.warning("request %s: %s is down: %s: %s", request_id, name, type(error).__name__, error)
    return DependencyStatus(
        status="down",
        kind=kind,
        error=f"{type(error).__name__} (details in the server log, request id {request_id})",
    )


async def _qdrant_status(resources: Resources) -> DependencyStatus:
    kind = "server" if resources.settings.qdrant_url else "local"
    started = time.perf_counter()
    try:
        await asyncio.wait_for(resources.knowledge.ping(), PING_TIMEOUT_S)
    except Exception as error:  # any failure to answer is "down"
        return _down("qdrant", kind, error)
    latency = round((time.perf_counter() - started) * 1000, 2)
    return DependencyStatus(status="ok", kind=kind, latency_ms=latency)


async def _mongodb_status(resources: Resources) -> DependencyStatus:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(resources.mongo.ping(), PING_TIMEOUT_S)
    except Exception as error:  # any failure to answer is "down"
        return _down("mongodb", resources.mongo_kind, error)
    latency = round((time.perf_counter() - started) * 1000, 2)
    return DependencyStatus(status="ok", kind=resources.mongo_kind, latency_ms=latency)


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(resources: ResourcesDep) -> JSONResponse:
    """Ping every dependency (3 s timeout each) and report."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(resources.database.ping(), PING_TIMEOUT_S)
        postgres = DependencyStatus(
            status="ok",
            kind=resources.database_kind,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
        )
    except Exception as error:  # any failure to answer is "down"
        postgres = _down("postgres", resources.database_kind, error)
    deps = {
        "postgres": postgres,
        "qdrant": await _qdrant_status(resources),
        "mongodb": await _mongodb_status(resources),
    }
    healthy = all(d.status == "ok" for d in deps.values())
    body = Health(status="ok" if healthy else "degraded", dependencies=deps)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if healthy else 503)
