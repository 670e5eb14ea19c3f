"""The SQL of thread-wide streams: each thread's places (its runs and its thread events, such
as state updates, in the order they became visible), and the NOTIFY that wakes followers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import delete, exists, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from stores.sql.database import Database
from stores.sql.models import THREAD_STREAM_POSITIONS, Conversation, Run, ThreadEvent

CHANNEL: Final[str] = "thread_events"
"""NOTIFY channel; the payload is a thread id whose stream has a new place (a run claimed for
the first time, or a thread event)."""
ACTIVE: Final[tuple[str, ...]] = ("pending", "running")


@dataclass(frozen=True, slots=True)
class Place:
    """One place of a thread's stream: a run (whose events come from the run event log) or a
    thread event."""

    position: int
    run_id: uuid.UUID | None = None  # a run's place; None: a thread event
    active: bool = False  # the run is pending or running
    settled: bool = True  # the run ended long enough ago that no late event can still come
    event: str = ""  # a thread event's name and data
    data: Any = None


async def notify_thread_stream(session: AsyncSession, thread_id: uuid.UUID) -> None:
    """Have the transaction of `session` wake the followers of `thread_id`'s stream at commit."""
    await session.execute(
        text("SELECT pg_notify(:channel, :thread)"), {"channel": CHANNEL, "thread": str(thread_id)}
    )


async def append_thread_event(
    db: Database, thread_id: uuid.UUID, event: str, data: Any
) -> int | None:
    """Store a thread event (`data` plain JSON) at the thread's next place, taken under the
    thread row's lock like a run's first claim; its position (None: no such thread)."""
    async with db.sessions.begin() as session:
        thread = await session.get(Conversation, thread_id, with_for_update=True)
        if thread is None:
            return None
        position = int(await session.scalar(select(THREAD_STREAM_POSITIONS.next_value())) or 0)
        session.add(ThreadEvent(thread_id=thread_id, position=position, event=event, data=data))
        await session.flush()
        await notify_thread_stream(session, thread_id)
    return position


async def places_after(
    db: Database, thread_id: uuid.UUID, position: int, *, limit: int, settle_s: float
) -> list[Place]:
    """The thread's places after `position`, in order, at most `limit`. A finished run is
    `settled` once it ended more than `settle_s` ago."""
    settled_before = text("now() - make_interval(secs => :settle)").bindparams(settle=settle_s)
    async with db.sessions() as session:
        runs = (
            await session.execute(
                select(
                    Run.stream_position,
                    Run.id,
                    Run.status.in_(ACTIVE),
                    Run.updated_at < settled_before,
                )
                .where(
                    Run.thread_id == thread_id,
                    Run.stream_position.is_not(None),
                    Run.stream_position > position,
                )
                .order_by(Run.stream_position)
                .limit(limit)
            )
        ).all()
        events = (
            await session.execute(
                select(ThreadEvent.position, ThreadEvent.event, ThreadEvent.data)
                .where(ThreadEvent.thread_id == thread_id, ThreadEvent.position > position)
                .order_by(ThreadEvent.position)
                .limit(limit)
            )
        ).all()
    places = [
        Place(int(p or 0), run_id=run_id, active=bool(active), settled=bool(old) and not active)
        for p, run_id, active, old in runs
    ] + [Place(int(p), event=str(event), data=data) for p, event, data in events]
    return sorted(places, key=lambda place: place.position)[:limit]


async def last_place(db: Database, thread_id: uuid.UUID) -> Place | None:
    """The thread's latest place (None: none yet)."""
    places: list[Place] = []
    async with db.sessions() as session:
        run = (
            await session.execute(
                select(Run.stream_position, Run.id, Run.status.in_(ACTIVE))
                .where(Run.thread_id == thread_id, Run.stream_position.is_not(None))
                .order_by(Run.stream_position.desc())
                .limit(1)
            )
        ).first()
        if run is not None:
            places.append(Place(int(run[0] or 0), run_id=run[1], active=bool(run[2])))
        event = await session.scalar(
            select(ThreadEvent.position)
            .where(ThreadEvent.thread_id == thread_id)
            .order_by(ThreadEvent.position.desc())
            .limit(1)
        )
        if event is not None:
            places.append(Place(int(event)))
    return max(places, key=lambda place: place.position) if places else None


async def thread_exists(db: Database, thread_id: uuid.UUID) -> bool:
    """Whether the thread is (still) there."""
    async with db.sessions() as session:
        return bool(await session.scalar(select(exists().where(Conversation.id == thread_id))))


async def prune_thread_events(db: Database, *, keep_s: float) -> int:
    """Delete thread events older than `keep_s` seconds; how many went."""
    async with db.sessions.begin() as session:
        result = await session.execute(
            delete(ThreadEvent).where(
                ThreadEvent.created_at
                < text("now() - make_interval(secs => :keep)").bindparams(keep=keep_s)
            )
        )
    return int(getattr(result, "rowcount", 0) or 0)
