"""Retention: the background sweeps the lifespan owns. Expired store items and cached tool
results are purged (`store.ttl`), and threads past their TTL are deleted with their runs and
checkpoints, or pruned to their latest checkpoint (`checkpointer.ttl`, thread `ttl`).

A sweep that fails is logged and tried again at the next interval; it never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from server.agent_api.threads import prune_thread_data
from server.background import sweep_forever
from server.config import Project
from server.resources import Resources
from server.runs.engine import RunEngine
from stores.sql import threads as thread_store

log = logging.getLogger(__name__)

# LangGraph's defaults when `checkpointer.ttl` leaves them out.
THREAD_SWEEP_INTERVAL_S = 5 * 60.0
THREAD_SWEEP_LIMIT = 1000


async def sweep_store(resources: Resources) -> str | None:
    """Purge expired memories (with their vectors) and expired cached tool results."""
    memories = await resources.memory.asweep_ttl()
    cached = await resources.tool_cache.sweep()
    if not memories and not cached:
        return None
    return f"{memories} memories and {cached} cached tool results purged"


async def sweep_threads(resources: Resources, engine: RunEngine, *, limit: int) -> str | None:
    """Delete the expired threads that ask for `delete`; prune the `keep_latest` ones."""
    expired = await thread_store.expired_threads(resources.database, limit=limit)
    if not expired:
        return None
    saver = await resources.checkpoints.ready()
    doomed = [thread_id for thread_id, strategy in expired if strategy == "delete"]
    kept = [thread_id for thread_id, strategy in expired if strategy == "keep_latest"]
    deleted = await prune_thread_data(engine, resources.database, saver, doomed, strategy="delete")
    pruned = await prune_thread_data(
        engine, resources.database, saver, kept, strategy="keep_latest"
    )
    await thread_store.mark_swept(resources.database, pruned)
    return f"{len(deleted)} expired threads deleted, {len(pruned)} pruned to their latest state"


@contextlib.asynccontextmanager
async def open_retention(
    resources: Resources, engine: RunEngine, project: Project
) -> AsyncIterator[None]:
    """Run the store and thread sweeps for as long as the block lasts."""
    thread_ttl = project.thread_ttl
    thread_interval = THREAD_SWEEP_INTERVAL_S
    limit = THREAD_SWEEP_LIMIT
    if thread_ttl is not None:
        if thread_ttl.sweep_interval_minutes is not None:
            thread_interval = thread_ttl.sweep_interval_minutes * 60
        limit = thread_ttl.sweep_limit or limit
    store_interval = project.store.sweep_interval_s or resources.settings.memory_sweep_interval_s
    tasks = [
        asyncio.create_task(
            sweep_forever("store TTL sweep", store_interval, lambda: sweep_store(resources)),
            name="store-ttl-sweep",
        ),
        asyncio.create_task(
            sweep_forever(
                "thread TTL sweep",
                thread_interval,
                lambda: sweep_threads(resources, engine, limit=limit),
            ),
            name="thread-ttl-sweep",
        ),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
