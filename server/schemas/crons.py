"""Request and response bodies of the crons routes, as langgraph-sdk's `client.crons` sends them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from server.schemas.common import PageOffset, StoredObject, StoredValue, WebhookUrl

StreamModeName = Literal[
    "values",
    "messages",
    "updates",
    "events",
    "tasks",
    "checkpoints",
    "debug",
    "custom",
    "messages-tuple",
]
CronSortBy = Literal[
    "cron_id", "assistant_id", "thread_id", "created_at", "updated_at", "next_run_date", "end_time"
]
CronField = Literal[
    "cron_id",
    "assistant_id",
    "thread_id",
    "on_run_completed",
    "end_time",
    "schedule",
    "timezone",
    "created_at",
    "updated_at",
    "payload",
    "user_id",
    "next_run_date",
    "metadata",
    "enabled",
    "now",
]
# The fields of a cron as the API returns it ("now" is a search-only sort key).
CRON_FIELDS = tuple(field for field in get_args(CronField) if field != "now")
# Fields of a cron body that are kept in `payload` and become the body of each run it creates.
RUN_PAYLOAD_FIELDS = (
    "assistant_id",
    "input",
    "config",
    "context",
    "metadata",
    "webhook",
    "interrupt_before",
    "interrupt_after",
    "multitask_strategy",
    "stream_mode",
    "stream_subgraphs",
    "stream_resumable",
    "durability",
    "checkpoint_during",
)


def _names(*names: str) -> str:
    return "|".join(f"{n}|{n.upper()}|{n.title()}" for n in names)


def _field(number: str, names: str = "", *, question: bool = False) -> str:
    """One cron field as a pattern: `*`, a value or a range, each with an optional step,
    comma-separated (and `?` where cron allows it)."""
    value = f"(?:{number}|{names})" if names else f"(?:{number})"
    atom = rf"(?:\*|{value}(?:-{value})?)(?:/[1-9][0-9]?)?"
    listed = f"{atom}(?:,{atom})*"
    return rf"(?:{listed}|\?)" if question else listed


_MINUTE = _field("[0-5]?[0-9]")
_HOUR = _field("[01]?[0-9]|2[0-3]")
_DAY = _field("0?[1-9]|[12][0-9]|3[01]", question=True)
_MONTH = _field(
    "0?[1-9]|1[0-2]",
    _names("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
)
_WEEKDAY = _field("[0-7]", _names("sun", "mon", "tue", "wed", "thu", "fri", "sat"), question=True)
SCHEDULE_PATTERN = (
    r"^(?:@(?:yearly|annually|monthly|weekly|daily|midnight|hourly)"
    rf"|{_MINUTE} +{_HOUR} +{_DAY} +{_MONTH} +{_WEEKDAY}(?: +{_MINUTE})?)$"
)
"""The schedules the server reads: 5 fields 'minute hour day month weekday' (numbers,
names, `*`, ranges, steps, lists), an optional 6th field of seconds, or an @alias."""
Schedule = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=SCHEDULE_PATTERN,
        description="A cron schedule: 'minute hour day month weekday' (e.g. '0 12 * * 1'), "
        "an optional 6th field of seconds, or @hourly, @daily, @weekly, @monthly, @yearly. "
        "One that never fires (e.g. February 30th) or fires more often than "
        "CRON_MIN_INTERVAL_S (60 s) is a 422 too.",
    ),
]


InterruptNodes = Literal["*"] | list[str] | None


def interrupt_nodes(when: str) -> Any:
    """The field of `interrupt_before` / `interrupt_after`, alike on runs and crons."""
    return Field(
        None,
        description=f"Nodes of the assistant's graph to pause {when} ('*': all); a name the "
        "graph lacks is a 422.",
    )


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class _RunFields(_Body):
    input: StoredValue = None
    metadata: StoredObject | None = None
    config: StoredObject | None = None
    context: StoredObject | None = None
    checkpoint_during: bool | None = None
    interrupt_before: InterruptNodes = interrupt_nodes("before")
    interrupt_after: InterruptNodes = interrupt_nodes("after")
    webhook: WebhookUrl | None = None
    stream_mode: StreamModeName | list[StreamModeName] | None = None
    stream_subgraphs: bool | None = None
    stream_resumable: bool | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    timezone: str | None = Field(None, max_length=100)
    end_time: datetime | None = None
    enabled: bool | None = None

    @field_validator("end_time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("end_time needs a timezone offset (e.g. 2026-01-01T00:00:00Z)")
        return value


class ThreadCronCreate(_RunFields):
    """`POST /threads/{thread_id}/runs/crons` (its runs keep the thread: no `on_run_completed`,
    which is refused when sent)."""

    schedule: Schedule
    assistant_id: str = Field(min_length=1, max_length=200)
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] | None = None
    on_run_completed: SkipJsonSchema[Literal["delete", "keep"] | None] = None


class CronCreate(ThreadCronCreate):
    """`POST /runs/crons`."""

    on_run_completed: Literal["delete", "keep"] | None = None


class CronUpdate(_RunFields):
    """`PATCH /runs/crons/{cron_id}`: only the fields sent change; `end_time: null` clears it."""

    # Sent as null, these two are refused (422); the document leaves null out.
    schedule: Schedule | SkipJsonSchema[None] = None
    enabled: bool | SkipJsonSchema[None] = None
    on_run_completed: Literal["delete", "keep"] | None = None


class CronSearch(_Body):
    """`POST /runs/crons/search`."""

    assistant_id: uuid.UUID | None = None
    thread_id: uuid.UUID | None = None
    enabled: bool | None = None
    metadata: StoredObject | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: PageOffset = 0
    sort_by: CronSortBy = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[CronField] | None = None


class CronCount(_Body):
    """`POST /runs/crons/count`."""

    assistant_id: uuid.UUID | None = None
    thread_id: uuid.UUID | None = None
    metadata: StoredObject | None = None
