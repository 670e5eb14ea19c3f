"""Per-identity limits kept in PostgreSQL, so every server process counts the same: runs created
per minute (a fixed one-minute window per identity) and runs in flight at once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import case, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from stores.errors import LimitError
from stores.sql.database import Database
from stores.sql.models import RateWindow, Run

WINDOW = timedelta(minutes=1)
IN_FLIGHT = ("pending", "running")


async def take_run_token(db: Database, identity: str, *, per_minute: int) -> None:
    """Count one run created by `identity` in its current minute.

    Raises:
        LimitError: over `per_minute` in this window (it says when the window ends); the
            refused attempt counts too, so hammering does not help.
    """
    if per_minute <= 0:
        return
    now = func.now()
    fresh = RateWindow.window_start <= now - WINDOW
    stmt = (
        insert(RateWindow)
        .values(identity=identity, window_start=now, count=1)
        .on_conflict_do_update(
            index_elements=[RateWindow.identity],
            set_={
                "window_start": case((fresh, now), else_=RateWindow.window_start),
                "count": case((fresh, 1), else_=RateWindow.count + 1),
            },
        )
        .returning(
            RateWindow.count,
            func.extract("epoch", RateWindow.window_start + WINDOW - now),
        )
    )
    async with db.sessions.begin() as session:
        count, left_s = (await session.execute(stmt)).one()
    if count > per_minute:
        raise LimitError(
            f"more than {per_minute} runs a minute (RUNS_PER_MINUTE); try again in "
            f"{max(1, round(float(left_s)))} s",
            retry_after_s=float(left_s),
        )


async def check_in_flight(session: AsyncSession, identity: str, *, cap: int) -> None:
    """Refuse one more run while `identity` has `cap` runs pending or running; called in the
    transaction that writes the run, which holds a lock per identity so two at once count
    each other.

    Raises:
        LimitError: the cap is reached.
    """
    if cap <= 0:
        return
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext("runs:" + identity))))
    busy = await session.scalar(
        select(func.count())
        .select_from(Run)
        .where(Run.user_id == identity, Run.status.in_(IN_FLIGHT))
    )
    if (busy or 0) >= cap:
        raise LimitError(
            f"{busy} runs of yours are pending or running; the limit is {cap} "
            "(RUNS_IN_FLIGHT_PER_USER): wait for one to end",
            retry_after_s=1.0,
        )
