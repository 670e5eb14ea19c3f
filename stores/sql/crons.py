"""Crons (scheduled runs): schedule math in the cron's timezone, CRUD, and claiming due crons."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from stores.errors import InvalidInputError, NotFoundError
from stores.sql.database import Database
from stores.sql.models import Conversation, Cron

CronSortBy = Literal[
    "cron_id", "assistant_id", "thread_id", "created_at", "updated_at", "next_run_date", "end_time"
]
_SORT_COLUMNS = {
    "cron_id": Cron.id,
    "assistant_id": Cron.assistant_id,
    "thread_id": Cron.thread_id,
    "created_at": Cron.created_at,
    "updated_at": Cron.updated_at,
    "next_run_date": Cron.next_run_date,
    "end_time": Cron.end_time,
}


def check_schedule(schedule: str) -> str:
    """Return `schedule` if croniter accepts it (5 fields, or 6 with seconds last, or @hourly...).

    Raises:
        InvalidInputError: naming `schedule`.
    """
    text = schedule.strip()
    if not text or not croniter.is_valid(text):
        raise InvalidInputError(
            f"{schedule!r} is not a cron schedule (5 fields 'min hour day month weekday', "
            "an optional 6th field of seconds, or @hourly/@daily/...)",
            field="schedule",
        )
    try:
        croniter(text, datetime.now(UTC)).get_next(datetime)
    except (CroniterError, ValueError) as error:
        raise InvalidInputError(
            f"the schedule {schedule!r} never fires (e.g. February 30th)", field="schedule"
        ) from error
    return text


def check_timezone(timezone: str | None) -> str:
    """Return the IANA timezone name (UTC when None); raises `InvalidInputError` on unknown ones."""
    name = timezone or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise InvalidInputError(
            f"{name!r} is not an IANA timezone (e.g. 'Europe/Paris')", field="timezone"
        ) from error
    return name


def next_run_after(schedule: str, timezone: str, *, after: datetime) -> datetime:
    """The first time strictly after `after` that `schedule` fires, read in `timezone`, in UTC."""
    local = after.astimezone(ZoneInfo(timezone))
    fire: datetime = croniter(schedule, local).get_next(datetime)
    return fire.astimezone(UTC)


def _first_run(
    schedule: str, timezone: str, *, now: datetime, end_time: datetime | None, enabled: bool
) -> datetime | None:
    if not enabled:
        return None
    fire = next_run_after(schedule, timezone, after=now)
    if end_time is not None and fire > end_time:
        return None
    return fire


async def _check_thread(session: AsyncSession, thread_id: uuid.UUID) -> None:
    if await session.get(Conversation, thread_id) is None:
        raise NotFoundError("thread", thread_id, field="thread_id")


async def create_cron(
    db: Database,
    *,
    assistant_id: uuid.UUID,
    thread_id: uuid.UUID | None,
    schedule: str,
    timezone: str | None,
    payload: Mapping[str, Any],
    metadata: Mapping[str, Any],
    on_run_completed: str | None = None,
    end_time: datetime | None = None,
    enabled: bool = True,
    user_id: str | None = None,
) -> Cron:
    """Insert a cron with its first `next_run_date`; unknown thread → `NotFoundError`."""
    schedule = check_schedule(schedule)
    zone = check_timezone(timezone)
    now = datetime.now(UTC)
    async with db.sessions.begin() as session:
        if thread_id is not None:
            await _check_thread(session, thread_id)
        row = Cron(
            assistant_id=assistant_id,
            thread_id=thread_id,
            user_id=user_id,
            schedule=schedule,
            timezone=zone,
            payload=dict(payload),
            metadata_=dict(metadata),
            on_run_completed=on_run_completed,
            end_time=end_time,
            enabled=enabled,
            next_run_date=_first_run(schedule, zone, now=now, end_time=end_time, enabled=enabled),
        )
        session.add(row)
        await session.flush()
        return row


async def get_cron(db: Database, cron_id: uuid.UUID) -> Cron:
    """The cron `cron_id`; `NotFoundError` naming `cron_id` when there is none."""
    async with db.sessions() as session:
        row = await session.get(Cron, cron_id)
        if row is None:
            raise NotFoundError("cron", cron_id, field="cron_id")
        return row


def _filtered(
    stmt: Select[Any],
    *,
    assistant_id: uuid.UUID | None,
    thread_id: uuid.UUID | None,
    enabled: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Select[Any]:
    if assistant_id is not None:
        stmt = stmt.where(Cron.assistant_id == assistant_id)
    if thread_id is not None:
        stmt = stmt.where(Cron.thread_id == thread_id)
    if enabled is not None:
        stmt = stmt.where(Cron.enabled.is_(enabled))
    if metadata:
        stmt = stmt.where(Cron.metadata_.contains(dict(metadata)))
    return stmt


async def search_crons(
    db: Database,
    *,
    assistant_id: uuid.UUID | None = None,
    thread_id: uuid.UUID | None = None,
    enabled: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
    limit: int = 10,
    offset: int = 0,
    sort_by: CronSortBy = "created_at",
    sort_order: Literal["asc", "desc"] = "desc",
) -> Sequence[Cron]:
    """Crons matching every given filter (metadata: containment), sorted, one page."""
    column = _SORT_COLUMNS[sort_by]
    order = column.asc() if sort_order == "asc" else column.desc()
    stmt = _filtered(
        select(Cron),
        assistant_id=assistant_id,
        thread_id=thread_id,
        enabled=enabled,
        metadata=metadata,
    ).order_by(order, Cron.id)
    async with db.sessions() as session:
        return (await session.scalars(stmt.limit(limit).offset(offset))).all()


async def count_crons(
    db: Database,
    *,
    assistant_id: uuid.UUID | None = None,
    thread_id: uuid.UUID | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """How many crons match the filters."""
    stmt = _filtered(
        select(func.count()).select_from(Cron),
        assistant_id=assistant_id,
        thread_id=thread_id,
        metadata=metadata,
    )
    async with db.sessions() as session:
        return int(await session.scalar(stmt) or 0)


async def update_cron(
    db: Database,
    cron_id: uuid.UUID,
    *,
    changes: Mapping[str, Any],
    payload_changes: Mapping[str, Any],
) -> Cron:
    """Apply column `changes` (schedule, timezone, end_time, enabled, metadata, on_run_completed)
    and merge `payload_changes` into the run payload; the next run date is recomputed."""
    async with db.sessions.begin() as session:
        row = await session.get(Cron, cron_id, with_for_update=True)
        if row is None:
            raise NotFoundError("cron", cron_id, field="cron_id")
        if "schedule" in changes:
            row.schedule = check_schedule(changes["schedule"])
        if "timezone" in changes:
            row.timezone = check_timezone(changes["timezone"])
        if "end_time" in changes:
            row.end_time = changes["end_time"]
        if "enabled" in changes:
            row.enabled = bool(changes["enabled"])
        if "metadata" in changes:
            row.metadata_ = dict(changes["metadata"])
        if "on_run_completed" in changes:
            row.on_run_completed = changes["on_run_completed"]
        if payload_changes:
            row.payload = {**row.payload, **payload_changes}
        row.next_run_date = _first_run(
            row.schedule,
            row.timezone,
            now=datetime.now(UTC),
            end_time=row.end_time,
            enabled=row.enabled,
        )
        row.updated_at = datetime.now(UTC)
        await session.flush()
        return row


async def delete_cron(db: Database, cron_id: uuid.UUID) -> None:
    """Delete the cron `cron_id`; `NotFoundError` when there is none."""
    async with db.sessions.begin() as session:
        row = await session.get(Cron, cron_id)
        if row is None:
            raise NotFoundError("cron", cron_id, field="cron_id")
        await session.delete(row)


async def claim_due_crons(db: Database, *, now: datetime, limit: int = 50) -> list[Cron]:
    """Take the crons due at `now` and move each to its next date, in one transaction.

    Rows are locked with `FOR UPDATE SKIP LOCKED`, so several processes polling together never
    take the same firing. A cron whose next date is past its `end_time` is disabled. Returns the
    claimed crons as they were when due (the caller creates one run for each).
    """
    stmt = (
        select(Cron)
        .where(Cron.enabled.is_(True), Cron.next_run_date <= now)
        .order_by(Cron.next_run_date)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed: list[Cron] = []
    async with db.sessions.begin() as session:
        for row in (await session.scalars(stmt)).all():
            if row.end_time is not None and row.end_time < now:
                row.enabled = False
                row.next_run_date = None
                continue
            claimed.append(
                Cron(
                    id=row.id,
                    assistant_id=row.assistant_id,
                    thread_id=row.thread_id,
                    user_id=row.user_id,
                    schedule=row.schedule,
                    timezone=row.timezone,
                    payload=dict(row.payload),
                    metadata_=dict(row.metadata_),
                    on_run_completed=row.on_run_completed,
                    end_time=row.end_time,
                    next_run_date=row.next_run_date,
                    enabled=row.enabled,
                )
            )
            try:
                fire: datetime | None = next_run_after(row.schedule, row.timezone, after=now)
            except (CroniterError, ValueError, KeyError):  # e.g. a timezone no longer known
                fire = None
            if fire is None or (row.end_time is not None and fire > row.end_time):
                row.enabled = False
                row.next_run_date = None
            else:
                row.next_run_date = fire
            row.updated_at = now
    return claimed
