"""Full garbage collections at quiet moments: the oldest generation is collected when no run
executes (or, under unbroken load, after ten times as many younger collections as the collector
would wait for), not whenever allocations happen to trigger it in the middle of a burst."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable

CHECK_S = 0.25  # how often the collector looks for a quiet moment
LATEST = 10  # under unbroken load, a full collection after LATEST x the usual younger ones


@contextlib.asynccontextmanager
async def quiet_full_collections(quiet: Callable[[], bool]) -> AsyncIterator[None]:
    """While open, the cyclic collector does not start full (generation 2) collections on its
    own: a task makes one once one is due (as many generation 1 collections since the last as
    its threshold says) and `quiet()` says nothing is executing, or at the latest after `LATEST`
    times as many. Each traverses every object not frozen (tens of ms under load), a pause of
    every request on the event loop. The thresholds are restored on exit."""
    thresholds = gc.get_threshold()
    due = max(thresholds[2], 1)
    gc.set_threshold(thresholds[0], thresholds[1], 2**30)

    async def collect() -> None:
        while True:
            await asyncio.sleep(CHECK_S)
            pending = gc.get_count()[2]  # generation 1 collections since the last full one
            if pending >= due * LATEST or (pending >= due and quiet()):
                gc.collect(2)

    task = asyncio.create_task(collect(), name="quiet-full-collections")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gc.set_threshold(*thresholds)
