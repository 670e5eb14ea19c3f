"""`GET /metrics`: Prometheus exposition of this server's metrics (every process of it).

Who may scrape: with METRICS_TOKEN, whoever sends it as a bearer token; with METRICS_PUBLIC,
anyone; otherwise an admin caller (API key or JWT), as for any other route.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.auth.caller import get_caller
from server.auth.contract import AuthError
from server.deps import ResourcesDep
from server.resources import Resources
from server.telemetry.metrics import CONTENT_TYPE, metrics, render, runs_gauge
from stores.sql import runs as run_store

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)
COUNT_TIMEOUT_S = 2.0


def sample_pools(resources: Resources) -> None:
    """Set the pool gauges from the SQL engine's pool and the checkpoint pool."""
    gauge = metrics().pool
    pool = resources.database.engine.pool
    checked_out = getattr(pool, "checkedout", None)
    if callable(checked_out):
        in_use = int(checked_out())
        gauge.labels("sql", "in_use").set(in_use)
        gauge.labels("sql", "idle").set(int(getattr(pool, "checkedin", lambda: 0)()))
        size = getattr(pool, "size", lambda: 0)()
        overflow = getattr(pool, "_max_overflow", 0)
        gauge.labels("sql", "max").set(int(size) + max(0, int(overflow)))
    stats = resources.checkpoints.pool.get_stats()
    size = stats.get("pool_size", 0)
    idle = stats.get("pool_available", 0)
    gauge.labels("checkpoints", "in_use").set(size - idle)
    gauge.labels("checkpoints", "idle").set(idle)
    gauge.labels("checkpoints", "max").set(resources.checkpoints.pool.max_size)


def _check_scraper(request: Request, resources: Resources) -> None:
    settings = resources.settings
    token = settings.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        scheme, _, value = sent.partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), expected):
            raise AuthError(401, "send METRICS_TOKEN as `Authorization: Bearer <token>`")
        return
    if settings.metrics_public:
        return
    if not get_caller(request).is_admin:
        raise AuthError(403, "/metrics is for admins (or set METRICS_TOKEN for a scraper)")


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, resources: ResourcesDep) -> Response:
    """Metrics in Prometheus text format: runs, queue wait, durations, streams, events,
    checkpoints, model/tool/embedding calls, HTTP requests, pools (see README: Operations)."""
    _check_scraper(request, resources)
    sample_pools(resources)
    extra = []
    try:
        counts = await asyncio.wait_for(run_store.count_active(resources.database), COUNT_TIMEOUT_S)
        extra.append(runs_gauge(counts))
    except Exception as error:  # the rest of the metrics still answer
        log.warning("counting runs for /metrics failed: %r", error)
    body = await asyncio.to_thread(render, extra)  # reads the processes' files
    return Response(body, media_type=CONTENT_TYPE)
