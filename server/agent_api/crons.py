"""Agent Server API crons: scheduled runs for a thread or stateless, searched, counted, changed."""

from __future__ import annotations

import functools
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, Request, Response, status

from server.agent_api.configurable import refuse_both, run_mirrored
from server.agent_api.state import set_pagination_headers
from server.agent_api.threads import thread_access
from server.auth.caller import Caller, CallerDep
from server.auth.collections import readable_collections
from server.auth.contract import Authorizer
from server.deps import DatabaseDep, ResourcesDep
from server.redact import mask_secrets
from server.runs.engine import RunEngine
from server.runs.scheduler import CronScheduler, open_cron_scheduler
from server.runs.webhooks import check_webhook_url, webhook_policy
from server.schemas.common import CONFLICT, NOT_FOUND, TOO_MANY
from server.schemas.crons import (
    CRON_FIELDS,
    RUN_PAYLOAD_FIELDS,
    CronCount,
    CronCreate,
    CronSearch,
    CronUpdate,
    ThreadCronCreate,
)
from server.schemas.runs import RunCreate
from stores.errors import InvalidInputError
from stores.sql import crons as store
from stores.sql.assistants import assistant_key, or_system, resolve_assistant
from stores.sql.filters import Filter
from stores.sql.models import Agent, Cron, Run
from stores.sql.runs import RunCreator

router = APIRouter(tags=["crons"], responses={**NOT_FOUND, **CONFLICT, **TOO_MANY})

_COLUMN_FIELDS = ("schedule", "timezone", "end_time", "enabled", "on_run_completed")


def cron_out(row: Cron, *, select: list[str] | None = None) -> dict[str, Any]:
    """A cron as langgraph-sdk's `Cron` shape (optionally only the `select`ed fields)."""
    body: dict[str, Any] = {
        "cron_id": str(row.id),
        "assistant_id": str(row.assistant_id),
        "thread_id": str(row.thread_id) if row.thread_id else None,
        "on_run_completed": row.on_run_completed,
        "end_time": row.end_time.isoformat() if row.end_time else None,
        "schedule": row.schedule,
        "timezone": row.timezone,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "payload": mask_secrets(row.payload),
        "user_id": row.user_id,
        "next_run_date": row.next_run_date.isoformat() if row.next_run_date else None,
        "metadata": mask_secrets(row.metadata_),
        "enabled": row.enabled,
    }
    if select:
        return {name: body[name] for name in select if name in CRON_FIELDS}
    return body


async def _checked_webhook(url: str | None, resources: ResourcesDep) -> None:
    if url is None:
        return
    try:
        await check_webhook_url(url, policy=webhook_policy(resources.settings))
    except ValueError as error:
        raise InvalidInputError(str(error), field="webhook") from error


def _wake_scheduler(request: Request) -> None:
    scheduler = getattr(request.app.state, "cron_scheduler", None)
    if scheduler is not None:
        scheduler.wake()


async def _assistant(caller: Caller, db: Any, assistant_id: str) -> Agent:
    """The assistant a cron may run: one the caller may read, or a system assistant."""
    key = assistant_key(assistant_id)
    access = await caller.authorize("assistants", "read", {"assistant_id": key})
    return await resolve_assistant(db, assistant_id, or_system(access))


async def _cron_access(caller: Caller, action: str, cron_id: uuid.UUID | None, **value: Any) -> Any:
    return await caller.authorize("crons", action, {"cron_id": cron_id, **value})


async def _create(
    body: ThreadCronCreate,
    *,
    thread_id: uuid.UUID | None,
    resources: ResourcesDep,
    request: Request,
    caller: Caller,
) -> dict[str, Any]:
    db = resources.database
    settings = resources.settings
    # Its runs mirror `config.configurable` and `context` (as a run's request does): both is
    # the 400 a run answers, where langgraph-api keeps the cron and refuses each of its runs.
    refuse_both(body.config, body.context)
    sent = body.model_dump(include=set(RUN_PAYLOAD_FIELDS), exclude_none=True, mode="json")
    value: dict[str, Any] = {
        "payload": sent,
        "schedule": body.schedule,
        "cron_id": None,
        "thread_id": thread_id,
        "user_id": caller.identity,
        "end_time": body.end_time,
        "metadata": body.metadata or {},
    }
    await caller.authorize("crons", "create", value)
    assistant = await _assistant(caller, db, body.assistant_id)
    await _checked_webhook(body.webhook, resources)
    if thread_id is not None and body.on_run_completed is not None:
        raise InvalidInputError(
            "on_run_completed applies only to stateless crons", field="on_run_completed"
        )
    sent["assistant_id"] = str(assistant.id)
    row = await store.create_cron(
        db,
        assistant_id=assistant.id,
        thread_id=thread_id,
        schedule=body.schedule,
        timezone=body.timezone,
        payload=sent,
        metadata=value["metadata"] if isinstance(value["metadata"], dict) else {},
        on_run_completed=(body.on_run_completed or "delete") if thread_id is None else None,
        end_time=body.end_time,
        enabled=True if body.enabled is None else body.enabled,
        user_id=caller.identity,
        auth=caller.run_auth(),
        thread_access=await thread_access(caller, "create_run", thread_id)
        if thread_id is not None
        else None,
        min_interval_s=settings.cron_min_interval_s,
        max_per_user=settings.crons_per_user,
    )
    _wake_scheduler(request)
    return cron_out(row)


@router.post("/threads/{thread_id}/runs/crons")
async def create_thread_cron(
    thread_id: uuid.UUID,
    body: ThreadCronCreate,
    resources: ResourcesDep,
    request: Request,
    caller: CallerDep,
) -> dict[str, Any]:
    """Schedule runs of an assistant on one thread."""
    return await _create(
        body, thread_id=thread_id, resources=resources, request=request, caller=caller
    )


@router.post("/runs/crons")
async def create_cron(
    body: CronCreate, resources: ResourcesDep, request: Request, caller: CallerDep
) -> dict[str, Any]:
    """Schedule stateless runs: each firing runs on a new thread (deleted after, unless `keep`)."""
    return await _create(body, thread_id=None, resources=resources, request=request, caller=caller)


@router.post("/runs/crons/search")
async def search_crons(
    body: CronSearch, db: DatabaseDep, response: Response, caller: CallerDep
) -> list[dict[str, Any]]:
    """Crons matching the filters, one page, with langgraph-api's pagination headers."""
    access = await _cron_access(
        caller,
        "search",
        None,
        assistant_id=body.assistant_id,
        thread_id=body.thread_id,
        metadata=body.metadata or {},
        limit=body.limit,
        offset=body.offset,
    )
    rows = await store.search_crons(
        db,
        assistant_id=body.assistant_id,
        thread_id=body.thread_id,
        enabled=body.enabled,
        metadata=body.metadata,
        limit=body.limit + 1,  # one more: whether another page follows
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
        access=access,
    )
    more = len(rows) > body.limit
    rows = rows[: body.limit]
    set_pagination_headers(response, offset=body.offset, count=len(rows), more=more)
    select = [str(name) for name in body.select] if body.select else None
    return [cron_out(row, select=select) for row in rows]


@router.post("/runs/crons/count")
async def count_crons(body: CronCount, db: DatabaseDep, caller: CallerDep) -> int:
    """How many crons match the filters."""
    access = await _cron_access(
        caller,
        "search",
        None,
        assistant_id=body.assistant_id,
        thread_id=body.thread_id,
        metadata=body.metadata or {},
    )
    return await store.count_crons(
        db,
        assistant_id=body.assistant_id,
        thread_id=body.thread_id,
        metadata=body.metadata,
        access=access,
    )


@router.get("/runs/crons/{cron_id}")
async def get_cron(cron_id: uuid.UUID, db: DatabaseDep, caller: CallerDep) -> dict[str, Any]:
    """One cron."""
    return cron_out(await store.get_cron(db, cron_id, await _cron_access(caller, "read", cron_id)))


@router.patch("/runs/crons/{cron_id}")
async def update_cron(
    cron_id: uuid.UUID,
    body: CronUpdate,
    resources: ResourcesDep,
    request: Request,
    caller: CallerDep,
) -> dict[str, Any]:
    """Change a cron; its next run date is recomputed from now."""
    sent = body.model_fields_set
    for name in ("schedule", "enabled"):
        if name in sent and getattr(body, name) is None:
            raise InvalidInputError(f"{name} may not be null", field=name)
    if "webhook" in sent:
        await _checked_webhook(body.webhook, resources)
    changes: dict[str, Any] = {name: getattr(body, name) for name in _COLUMN_FIELDS if name in sent}
    if "timezone" in changes and changes["timezone"] is None:
        changes["timezone"] = "UTC"
    if body.metadata is not None:
        changes["metadata"] = body.metadata
    # A new context replaces the payload's `configurable` and the other way round (both: 400).
    refuse_both(body.config, body.context)
    payload_changes = body.model_dump(
        include=set(RUN_PAYLOAD_FIELDS) & sent, exclude_none=True, mode="json"
    )
    value: dict[str, Any] = {
        "cron_id": cron_id,
        "payload": payload_changes,
        "schedule": body.schedule,
        "metadata": dict(changes.get("metadata") or {}),
    }
    access = await caller.authorize("crons", "update", value)
    if "metadata" in changes and isinstance(value["metadata"], dict):
        changes["metadata"] = value["metadata"]
    row = await store.update_cron(
        resources.database,
        cron_id,
        changes=changes,
        payload_changes=payload_changes,
        access=access,
        min_interval_s=resources.settings.cron_min_interval_s,
    )
    _wake_scheduler(request)
    return cron_out(row)


@router.delete("/runs/crons/{cron_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_cron(cron_id: uuid.UUID, db: DatabaseDep, caller: CallerDep) -> Response:
    """Delete a cron; runs it already created are kept."""
    await store.delete_cron(db, cron_id, await _cron_access(caller, "delete", cron_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def submit_cron_run(
    engine: RunEngine, cron: Cron, *, authorizer: Authorizer | None = None
) -> Run:
    """Create the run of one firing of `cron` (the scheduler's `submit`), as the cron's creator:
    their `threads.create_run` handler is asked again, its filter applies to the thread, the
    assistant must still be one they may use, and their cap of runs in flight holds.

    A thread cron runs on its thread with the cron's multitask strategy; a stateless cron runs
    on a new temporary thread, deleted after the run unless `on_run_completed` is `keep`. The
    run's metadata is the cron's metadata, then the payload's, plus `cron_id`; its
    `config.configurable` and context mirror each other, and hold `cron_id` as there.
    """
    payload = dict(cron.payload)
    payload["assistant_id"] = str(cron.assistant_id)
    stateless = cron.thread_id is None
    if stateless:
        payload["on_completion"] = "keep" if cron.on_run_completed == "keep" else "delete"
    body = RunCreate.model_validate(payload)
    # As langgraph-api's runs of a cron: its `configurable` (with `cron_id`) or its context is
    # the run's context and `configurable` both (a payload with both is refused, as a run's).
    config = dict(body.config or {})
    if not body.context:
        config["configurable"] = {**(config.get("configurable") or {}), "cron_id": str(cron.id)}
    body.config, body.context = run_mirrored(config, body.context)
    body.config["configurable"]["cron_id"] = str(cron.id)
    caller = Caller.of_run(cron.auth, authorizer)
    value: dict[str, Any] = {
        "thread_id": cron.thread_id,
        "assistant_id": cron.assistant_id,
        "metadata": {**cron.metadata_, **(body.metadata or {}), "cron_id": str(cron.id)},
        "multitask_strategy": body.multitask_strategy,
        "if_not_exists": "create" if stateless else "reject",
        "kwargs": body.model_dump(mode="json", include={"input", "config", "context"}),
    }
    access: Filter | None = await caller.authorize("threads", "create_run", value)
    assistant = await _assistant(caller, engine.db, str(cron.assistant_id))
    kwargs = body.model_dump(
        mode="json",
        exclude={"assistant_id", "metadata", "multitask_strategy", "checkpoint", "if_not_exists"},
    )
    creator = RunCreator(access=access)
    if caller.identity is not None:
        creator = RunCreator(
            user_id=caller.identity,
            auth=caller.run_auth(collections=await readable_collections(caller, engine.db)),
            access=access,
            max_in_flight=engine.settings.runs_in_flight_per_user,
        )
    return await engine.submit(
        thread_id=cron.thread_id or uuid.uuid4(),
        assistant=assistant,
        kwargs=kwargs,
        metadata=value["metadata"] if isinstance(value["metadata"], dict) else {},
        multitask_strategy=body.multitask_strategy,
        if_not_exists="create" if stateless else "reject",
        temporary=stateless,
        creator=creator,
    )


def open_crons(
    engine: RunEngine, *, poll_interval_s: float, authorizer: Authorizer | None = None
) -> AbstractAsyncContextManager[CronScheduler]:
    """The lifespan's cron scheduler, creating runs through `engine` as each cron's creator
    (whose handlers `authorizer` runs)."""
    return open_cron_scheduler(
        database=engine.db,
        submit=functools.partial(submit_cron_run, engine, authorizer=authorizer),
        poll_interval_s=poll_interval_s,
    )
