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

from stores.errors import InvalidInputError, LimitError, NotFoundError
from stores.sql.database import Database
from stores.sql.filters import Filter, filter_clause, visible_row
from stores.sql.models import Cron
from stores.sql.threads import thread_row

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


FIRINGS_CHECKED = 64  # consecutive firings looked at for the shortest interval


def visible(access: Filter | None) -> Any:
    """The condition under which a cron satisfies an auth filter (on its metadata)."""
    return filter_clause(Cron.metadata_, access)


def check_schedule(schedule: str, *, min_interval_s: float = 0) -> str:
    """Return `schedule` if croniter accepts it (5 fields, or 6 with seconds last, or @hourly...)
    and it never fires twice within `min_interval_s`.

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
        firings = croniter(text, datetime.now(UTC))
        previous: datetime = firings.get_next(datetime)
        shortest: float | None = None
        for _ in range(FIRINGS_CHECKED if min_interval_s > 0 else 0):
            following: datetime = firings.get_next(datetime)
            gap = (following - previous).total_seconds()
            shortest = gap if shortest is None else min(shortest, gap)
            previous = following
    except (CroniterError, ValueError) as error:
        raise InvalidInputError(
            f"the schedule {schedule!r} never fires (e.g. February 30th)", field="schedule"
        ) from error
    if shortest is not None and shortest < min_interval_s:
        raise InvalidInputError(
            f"the schedule {schedule!r} fires every {shortest:g} s; crons fire at most every "
            f"{min_interval_s:g} s (CRON_MIN_INTERVAL_S)",
            field="schedule",
        )
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
    auth: Mapping[str, Any] | None = None,
    thread_access: Filter | None = None,
    min_interval_s: float = 0,
    max_per_user: int = 0,
) -> Cron:
    """Insert a cron with its first `next_run_date`.

    Its thread must exist and satisfy `thread_access`; the schedule must not fire more often
    than every `min_interval_s`; `user_id` (whose runs it creates, as `auth` says) may own at
    most `max_per_user` crons (0: no cap).

    Raises:
        NotFoundError: unknown thread (or not the creator's), field `thread_id`.
        InvalidInputError: bad schedule or timezone.
        LimitError: the creator has `max_per_user` crons.
    """
    schedule = check_schedule(schedule, min_interval_s=min_interval_s)
    zone = check_timezone(timezone)
    now = datetime.now(UTC)
    async with db.sessions.begin() as session:
        if thread_id is not None:
            await thread_row(session, thread_id, thread_access, field="thread_id")
        if user_id is not None and max_per_user > 0:
            await session.execute(
                select(func.pg_advisory_xact_lock(func.hashtext("crons:" + user_id)))
            )
            owned = await session.scalar(
                select(func.count()).select_from(Cron).where(Cron.user_id == user_id)
            )
            if (owned or 0) >= max_per_user:
                raise LimitError(
                    f"you have {owned} crons; the limit is {max_per_user} (CRONS_PER_USER)",
                    field="schedule",
                )
        row = Cron(
            assistant_id=assistant_id,
            thread_id=thread_id,
            user_id=user_id,
            auth=dict(auth) if auth is not None else None,
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


async def _cron_row(
    session: AsyncSession, cron_id: uuid.UUID, access: Filter | None, *, for_update: bool = False
) -> Cron:
    row = await visible_row(session, Cron, cron_id, visible(access), for_update=for_update)
    if row is None:
        raise NotFoundError("cron", cron_id, field="cron_id")
    return row


async def get_cron(db: Database, cron_id: uuid.UUID, access: Filter | None = None) -> Cron:
    """The cron `cron_id` if it satisfies `access`; `NotFoundError` naming `cron_id` else."""
    async with db.sessions() as session:
        return await _cron_row(session, cron_id, access)


def _filtered(
    stmt: Select[Any],
    *,
    assistant_id: uuid.UUID | None,
    thread_id: uuid.UUID | None,
    enabled: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
    access: Filter | None = None,
) -> Select[Any]:
    stmt = stmt.where(visible(access))
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
    access: Filter | None = None,
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
        access=access,
    ).order_by(order, Cron.id)
    async with db.sessions() as session:
        return (await session.scalars(stmt.limit(limit).offset(offset))).all()


async def count_crons(
    db: Database,
    *,
    assistant_id: uuid.UUID | None = None,
    thread_id: uuid.UUID | None = None,
    metadata: Mapping[str, Any] | None = None,
    access: Filter | None = None,
) -> int:
    """How many crons match the filters."""
    stmt = _filtered(
        select(func.count()).select_from(Cron),
        assistant_id=assistant_id,
        thread_id=thread_id,
        metadata=metadata,
        access=access,
    )
    async with db.sessions() as session:
        return int(await session.scalar(stmt) or 0)


def merged_payload(payload: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`changes` over a cron's run payload, key by key as langgraph-api merges them, except that
    a new non-empty `context` replaces the payload's `config.configurable` and a new non-empty
    `config.configurable` its `context`: they are one (each run mirrors them), and a payload
    holding both would have every run it starts refused."""
    merged = {**payload, **changes}
    configurable = (changes.get("config") or {}).get("configurable")
    if (
        changes.get("context")
        and not configurable
        and (merged.get("config") or {}).get("configurable")
    ):
        config = {k: v for k, v in merged["config"].items() if k != "configurable"}
        if config:
            merged["config"] = config
        else:
            del merged["config"]
    elif configurable and not changes.get("context"):
        merged.pop("context", None)
    return merged


async def update_cron(
    db: Database,
    cron_id: uuid.UUID,
    *,
    changes: Mapping[str, Any],
    payload_changes: Mapping[str, Any],
    access: Filter | None = None,
    min_interval_s: float = 0,
) -> Cron:
    """Apply column `changes` (schedule, timezone, end_time, enabled, metadata, on_run_completed)
    and merge `payload_changes` into the run payload; the next run date is recomputed."""
    async with db.sessions.begin() as session:
        row = await _cron_row(session, cron_id, access, for_update=True)
        if "schedule" in changes:
            row.schedule = check_schedule(changes["schedule"], min_interval_s=min_interval_s)
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
            row.payload = merged_payload(row.payload, payload_changes)
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


async def delete_cron(db: Database, cron_id: uuid.UUID, access: Filter | None = None) -> None:
    """Delete the cron `cron_id` if it satisfies `access`; `NotFoundError` when there is none."""
    async with db.sessions.begin() as session:
        await session.delete(await _cron_row(session, cron_id, access))


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
                    auth=row.auth,
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
