"""The cron scheduler: a lifespan task that claims due crons and submits one run for each."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from stores.sql.crons import claim_due_crons
from stores.sql.database import Database
from stores.sql.models import Cron

log = logging.getLogger(__name__)

SubmitCron = Callable[[Cron], Awaitable[Any]]
"""Creates the run of one firing of a cron (given the cron as it was when due)."""


class CronScheduler:
    """Polls for due crons every `poll_interval_s` (or at once when woken) and submits runs.

    Several processes may run one each: `claim_due_crons` locks with `SKIP LOCKED` and moves
    `next_run_date` in the same transaction, so a firing is taken by one process only. A firing
    whose run cannot be submitted is logged and skipped (at most once, never twice).
    """

    def __init__(
        self,
        *,
        database: Database,
        submit: SubmitCron,
        poll_interval_s: float,
        batch_size: int = 50,
    ) -> None:
        self._database = database
        self._submit = submit
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self.fired = 0

    def wake(self) -> None:
        """Look for due crons now (after a cron is created or changed)."""
        self._wake.set()

    async def tick(self, *, now: datetime | None = None) -> int:
        """Claim the crons due at `now` and submit their runs; returns how many fired."""
        crons = await claim_due_crons(
            self._database, now=now or datetime.now(UTC), limit=self._batch_size
        )
        for cron in crons:
            try:
                await self._submit(cron)
            except Exception:
                log.exception("cron %s: could not create its run", cron.id)
            else:
                self.fired += 1
        return len(crons)

    async def run(self) -> None:
        """Tick until cancelled; a database outage is logged and retried on the next tick."""
        while True:
            try:
                claimed = await self.tick()
            except (SQLAlchemyError, OSError) as error:
                log.warning("cron scheduler: database unavailable: %s", error)
                claimed = 0
            except Exception:  # never let one bad cron stop the scheduler of this process
                log.exception("cron scheduler: tick failed")
                claimed = 0
            if claimed >= self._batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)
            self._wake.clear()


@asynccontextmanager
async def open_cron_scheduler(
    *, database: Database, submit: SubmitCron, poll_interval_s: float
) -> AsyncIterator[CronScheduler]:
    """Run a `CronScheduler` in the background until the context exits."""
    scheduler = CronScheduler(database=database, submit=submit, poll_interval_s=poll_interval_s)
    task = asyncio.create_task(scheduler.run(), name="cron-scheduler")
    try:
        yield scheduler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
