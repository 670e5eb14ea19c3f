"""Agent Server API runs: create, stream, wait, list, get, delete, join, cancel; stateless forms."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from nodes.context import reads_agent_context
from server.agent_api.configurable import run_mirrored
from server.agent_api.threads import thread_access
from server.auth.caller import Caller, CallerDep
from server.auth.limits import run_creator
from server.deps import (
    DatabaseDep,
    EngineDep,
    ResourcesDep,
    RunEventsDep,
    RunServices,
    RunServicesDep,
)
from server.runs.context import ContextOverrides, check_overrides
from server.runs.engine import RunEngine, run_json
from server.runs.execute import AUTH_CONFIGURABLE
from server.runs.streaming import validate_stream_modes
from server.runs.webhooks import check_webhook_url, webhook_policy
from server.schemas.common import (
    CONFLICT,
    NOT_FOUND,
    TOO_MANY,
    Responses,
    event_stream,
)
from server.schemas.runs import BatchRunCreate, RunCreate, RunField, RunsCancel
from server.sse import (
    ResultResponse,
    follow_run,
    parse_last_event_id,
    run_headers,
    sse_response,
)
from stores.errors import InvalidInputError
from stores.memory.operations import MAX_OFFSET
from stores.sql import runs as run_store
from stores.sql.assistants import assistant_key, or_system, resolve_assistant
from stores.sql.filters import Filter
from stores.sql.models import Agent, Run

router = APIRouter(tags=["runs"], responses={**NOT_FOUND, **CONFLICT, **TOO_MANY})


STREAM_ANSWER: Responses = {
    200: event_stream(
        "The run's events as server-sent events (`metadata` first; `: heartbeat` comments in "
        "between; `error` on failure; the stream ends with the run)."
    )
}


Action = Annotated[Literal["interrupt", "rollback"], Query(description="interrupt or rollback")]


async def runnable_filter(caller: Caller, assistant_id: str) -> Filter | None:
    """Which assistants a run of `caller` may use: those it may read, and system ones (None:
    any)."""
    key = assistant_key(assistant_id)
    return or_system(await caller.authorize("assistants", "read", {"assistant_id": key}))


async def runnable_assistant(caller: Caller, db: DatabaseDep, assistant_id: str) -> Agent:
    """The assistant a run may use: one the caller may read, or a system assistant."""
    return await resolve_assistant(db, assistant_id, await runnable_filter(caller, assistant_id))


_OVERRIDES = frozenset(ContextOverrides.model_fields)
"""The keys of a run's context that change Switchboard's own agents (`server.runs.context`)."""


async def _submit(body: RunCreate, services: RunServices, *, thread_id: uuid.UUID | None) -> Run:
    engine, db, resources, caller = (
        services.engine,
        services.db,
        services.resources,
        services.caller,
    )
    configurable = (body.config or {}).get("configurable")
    for key in AUTH_CONFIGURABLE:
        if isinstance(configurable, dict) and key in configurable:
            raise InvalidInputError(
                f"config.configurable.{key} is set by the server (the run's creator)",
                field=f"config.configurable.{key}",
            )
    # As langgraph-api: the run's `config.configurable` and `context` mirror each other (400
    # for both), so a graph reading `runtime.context` sees what a client put in `configurable`.
    # A context is checked against Switchboard's agent context here, also one mirrored from a
    # `configurable` that sets one of its keys (422 naming `config.configurable`); any other
    # `configurable` keeps the one-round-trip path below.
    given_context, field = body.context, "context"
    if body.config or body.context:
        body.config, body.context = run_mirrored(body.config, body.context)
        if not given_context and body.context and _OVERRIDES.intersection(body.context):
            given_context, field = body.context, "config.configurable"
    stateless = thread_id is None
    value: dict[str, Any] = {
        "thread_id": thread_id,
        "assistant_id": assistant_key(body.assistant_id),
        "metadata": body.metadata or {},
        "multitask_strategy": body.multitask_strategy,
        "if_not_exists": "create" if stateless else body.if_not_exists,
        "after_seconds": body.after_seconds,
        "kwargs": body.model_dump(mode="json", include={"input", "config", "context", "webhook"}),
    }
    access = await caller.authorize("threads", "create_run", value)
    assistant_access = await runnable_filter(caller, body.assistant_id)
    node_lists = [
        name
        for name in ("interrupt_before", "interrupt_after")
        if isinstance(getattr(body, name), list)
    ]
    kwargs = _run_kwargs(body)
    metadata = value["metadata"] if isinstance(value["metadata"], dict) else {}
    if (
        thread_id is not None
        and caller.identity is None
        and access is None
        and assistant_access is None
        and not (node_lists or given_context or body.webhook)
    ):
        # The common case (an open caller, nothing to check against the graph first): the
        # assistant is read by the statement that writes the run, all in one round trip. When
        # it wrote nothing (an unknown assistant or thread, an undeclared graph, runs in flight)
        # the path below says why, or applies the multitask strategy.
        run = await engine.submit_at_once(
            thread_id=thread_id,
            assistant_id=assistant_key(body.assistant_id),
            kwargs=kwargs,
            metadata=metadata,
            multitask_strategy=body.multitask_strategy,
        )
        if run is not None:
            return run
    assistant = await resolve_assistant(db, body.assistant_id, assistant_access)
    engine.graphs.require(assistant.graph_id, field="assistant_id")
    if node_lists or given_context:
        # The graph's nodes and context schema (a factory is called for them, as for a read).
        async with engine.graphs.acquire(
            assistant.graph_id, assistant.config, access="assistants.read", field="assistant_id"
        ) as graph:
            for field in node_lists:
                unknown = [n for n in getattr(body, field) if n not in graph.nodes]
                if unknown:
                    raise InvalidInputError(
                        f"{field}: graph {assistant.graph_id!r} has no node {unknown[0]!r}",
                        field=field,
                    )
            if reads_agent_context(graph):
                check_overrides(given_context, field=field)
    if body.webhook:
        try:
            await check_webhook_url(body.webhook, policy=webhook_policy(resources.settings))
        except ValueError as error:
            raise InvalidInputError(str(error), field="webhook") from error
    return await engine.submit(
        thread_id=thread_id or uuid.uuid4(),
        assistant=assistant,
        kwargs=kwargs,
        metadata=metadata,
        multitask_strategy=body.multitask_strategy,
        if_not_exists="create" if stateless else body.if_not_exists,
        temporary=stateless,
        creator=await run_creator(caller, db, resources.settings, access=access),
    )


def _run_kwargs(body: RunCreate) -> dict[str, Any]:
    """What the run keeps of its request to execute it (`runs.kwargs`)."""
    kwargs = body.model_dump(
        mode="json",
        exclude={
            "assistant_id",
            "thread_id",
            "metadata",
            "multitask_strategy",
            "checkpoint",
            "if_not_exists",
        },
    )
    if body.command is not None:
        # As langgraph-api: a command wins over an input sent with it (Agent Chat UI resumes
        # with `input: {}` and `command: {resume}`).
        kwargs["command"] = body.command.model_dump(mode="json", exclude_unset=True)
        kwargs["input"] = None
    if body.checkpoint is not None and body.checkpoint.checkpoint_id and not body.checkpoint_id:
        kwargs["checkpoint_id"] = body.checkpoint.checkpoint_id
    return kwargs


def _stream(
    run: Run,
    *,
    engine: RunEngine,
    events: RunEventsDep,
    after_seq: int | None,
    cancel_on_disconnect: bool,
    modes: list[str] | None = None,
    first: tuple[int, str, Any] | None = None,
) -> Response:
    def cancel() -> None:
        engine.cancel_soon(run.id, reason="the client disconnected")

    return sse_response(
        follow_run(
            events,
            run.id,
            after_seq=after_seq,
            modes=modes,
            on_disconnect=cancel if cancel_on_disconnect else None,
            first=first,
        ),
        headers=run_headers(run.id, thread_id=run.thread_id),
    )


def _stream_new(run: Run, body: RunCreate, *, engine: RunEngine, events: RunEventsDep) -> Response:
    """The stream of a run just created: every event from the first (sent at once when the
    creating statement stored it: a run claimed at creation)."""
    return _stream(
        run,
        engine=engine,
        events=events,
        after_seq=None,
        cancel_on_disconnect=body.on_disconnect == "cancel",
        first=run_store.stored_first_event(run),
    )


def _result(
    run: Run,
    *,
    engine: RunEngine,
    keepalive_s: float,
    cancel_on_disconnect: bool = False,
    fresh: bool = False,
) -> ResultResponse:
    """The run's final values as JSON once it is done; a newline every `keepalive_s` until
    then keeps proxies and clients from timing out (JSON allows leading whitespace).
    `fresh`: the run was just created (so it is not read before it is announced done).
    A client that leaves before the end stops waiting at once (and, with
    `cancel_on_disconnect`, cancels the run)."""

    def cancel() -> None:
        engine.cancel_soon(run.id, reason="the client disconnected")

    return ResultResponse(
        lambda: engine.output(run.id, fresh=fresh),
        keepalive_s=keepalive_s,
        headers=_join_headers(run),
        on_disconnect=cancel if cancel_on_disconnect else None,
    )


def _join_headers(run: Run) -> dict[str, str]:
    base = f"/threads/{run.thread_id}/runs/{run.id}" if run.thread_id else f"/runs/{run.id}"
    return {"Location": f"{base}/join", "Content-Location": base}


# -- runs on a thread ----------------------------------------------------------------------


@router.post("/threads/{thread_id}/runs")
async def create_run(
    thread_id: uuid.UUID, body: RunCreate, services: RunServicesDep
) -> JSONResponse:
    """Create a background run on a thread."""
    run = await _submit(body, services, thread_id=thread_id)
    return JSONResponse(
        run_json(run), headers={"Content-Location": f"/threads/{thread_id}/runs/{run.id}"}
    )


@router.post("/threads/{thread_id}/runs/stream", responses=STREAM_ANSWER)
async def stream_run(thread_id: uuid.UUID, body: RunCreate, services: RunServicesDep) -> Response:
    """Create a run on a thread and stream its events (SSE)."""
    run = await _submit(body, services, thread_id=thread_id)
    return _stream_new(run, body, engine=services.engine, events=services.events)


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(thread_id: uuid.UUID, body: RunCreate, services: RunServicesDep) -> Response:
    """Create a run on a thread and return its final values (or `__error__`)."""
    run = await _submit(body, services, thread_id=thread_id)
    return _result(
        run,
        engine=services.engine,
        keepalive_s=services.resources.settings.sse_heartbeat_s,
        cancel_on_disconnect=body.on_disconnect == "cancel",
        fresh=True,
    )


@router.get("/threads/{thread_id}/runs")
async def list_runs(
    thread_id: uuid.UUID,
    db: DatabaseDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status: Annotated[
        Literal["pending", "running", "success", "error", "timeout", "interrupted"]
        | SkipJsonSchema[None],
        Query(),
    ] = None,
    select: Annotated[list[RunField] | SkipJsonSchema[None], Query()] = None,
) -> list[dict[str, Any]]:
    """The thread's runs, newest first (only the `select`ed fields when given)."""
    await run_store.require_thread(db, thread_id, await thread_access(caller, "read", thread_id))
    runs = await run_store.list_runs(db, thread_id, limit=limit, offset=offset, status=status)
    rows = [run_json(run) for run in runs]
    if select:
        rows = [{key: row[key] for key in select} for row in rows]
    return rows


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(
    thread_id: uuid.UUID, run_id: uuid.UUID, db: DatabaseDep, caller: CallerDep
) -> dict[str, Any]:
    """One run of the thread."""
    access = await thread_access(caller, "read", thread_id, run_id=run_id)
    await run_store.require_thread(db, thread_id, access)
    return run_json(await run_store.get_run(db, run_id, thread_id=thread_id, access=access))


@router.delete("/threads/{thread_id}/runs/{run_id}", status_code=204)
async def delete_run(
    thread_id: uuid.UUID, run_id: uuid.UUID, db: DatabaseDep, caller: CallerDep
) -> Response:
    """Delete a finished run (409 while it is pending or running)."""
    access = await thread_access(caller, "delete", thread_id, run_id=run_id)
    await run_store.require_thread(db, thread_id, access)
    await run_store.delete_run(db, run_id, thread_id=thread_id, access=access)
    return Response(status_code=204)


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(
    thread_id: uuid.UUID,
    run_id: uuid.UUID,
    db: DatabaseDep,
    engine: EngineDep,
    resources: ResourcesDep,
    caller: CallerDep,
    cancel_on_disconnect: bool = False,
) -> Response:
    """Wait for the run to finish; its final values (or `__error__`)."""
    access = await thread_access(caller, "read", thread_id, run_id=run_id)
    run = await run_store.get_run(db, run_id, thread_id=thread_id, access=access)
    return _result(
        run,
        engine=engine,
        keepalive_s=resources.settings.sse_heartbeat_s,
        cancel_on_disconnect=cancel_on_disconnect,
    )


@router.get(
    "/threads/{thread_id}/runs/{run_id}/stream",
    responses=STREAM_ANSWER,
)
async def join_run_stream(
    thread_id: uuid.UUID,
    run_id: uuid.UUID,
    db: DatabaseDep,
    engine: EngineDep,
    events: RunEventsDep,
    caller: CallerDep,
    cancel_on_disconnect: bool = False,
    stream_mode: Annotated[list[str] | SkipJsonSchema[None], Query()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Follow the run's events: stored ones after `Last-Event-ID` (or all), then live ones."""
    access = await thread_access(caller, "read", thread_id, run_id=run_id)
    run = await run_store.get_run(db, run_id, thread_id=thread_id, access=access)
    after = parse_last_event_id(last_event_id)  # 422 naming Last-Event-ID
    try:
        wanted = [m for m in stream_mode or [] if m]  # the SDK sends `stream_mode=` for None
        modes = validate_stream_modes(wanted) if wanted else None
    except ValueError as error:
        raise InvalidInputError(str(error), field="stream_mode") from error
    return _stream(
        run,
        engine=engine,
        events=events,
        after_seq=after,
        cancel_on_disconnect=cancel_on_disconnect,
        modes=modes,
    )


@router.post(
    "/threads/{thread_id}/runs/{run_id}/cancel",
    responses={
        200: {
            "description": "`wait=true`: the run's final values once it has stopped (as "
            "`/runs/wait` answers them).",
            "content": {"application/json": {"schema": {}}},
        },
        202: {"description": "`wait=false` (the default): the cancellation is requested; no body."},
    },
)
async def cancel_run(
    thread_id: uuid.UUID,
    run_id: uuid.UUID,
    db: DatabaseDep,
    engine: EngineDep,
    resources: ResourcesDep,
    caller: CallerDep,
    wait: bool = False,
    action: Action = "interrupt",
) -> Response:
    """Cancel the run (interrupt keeps its checkpoints; rollback deletes the run and them)."""
    access = await thread_access(caller, "update", thread_id, run_id=run_id, action=action)
    run = await run_store.get_run(db, run_id, thread_id=thread_id, access=access)
    await engine.cancel(
        [run.id],
        action=action,
        thread_id=thread_id,
        reason=f"{action} requested via POST /threads/{{thread_id}}/runs/{{run_id}}/cancel",
    )
    if not wait:
        return Response(status_code=202)
    return _result(run, engine=engine, keepalive_s=resources.settings.sse_heartbeat_s)


# -- stateless runs ------------------------------------------------------------------------


@router.post("/runs")
async def create_stateless_run(body: RunCreate, services: RunServicesDep) -> JSONResponse:
    """Create a background run on a temporary thread (deleted after, unless `keep`)."""
    run = await _submit(body, services, thread_id=None)
    return JSONResponse(run_json(run), headers={"Content-Location": f"/runs/{run.id}"})


@router.post("/runs/stream", responses=STREAM_ANSWER)
async def stream_stateless_run(body: RunCreate, services: RunServicesDep) -> Response:
    """Create a run on a temporary thread and stream its events (SSE)."""
    run = await _submit(body, services, thread_id=None)
    answer = _stream_new(run, body, engine=services.engine, events=services.events)
    # As langgraph-api: the run's location without its temporary thread, whose id the JS
    # client's `onRunCreated` would otherwise hand on (a thread about to be deleted).
    answer.headers.update(run_headers(run.id, thread_id=None))
    return answer


@router.post("/runs/wait")
async def wait_stateless_run(body: RunCreate, services: RunServicesDep) -> Response:
    """Create a run on a temporary thread and return its final values (or `__error__`)."""
    run = await _submit(body, services, thread_id=None)
    return _result(
        run,
        engine=services.engine,
        keepalive_s=services.resources.settings.sse_heartbeat_s,
        cancel_on_disconnect=body.on_disconnect == "cancel",
        fresh=True,
    )


@router.post("/runs/batch")
async def create_run_batch(
    body: Annotated[list[BatchRunCreate], Field(min_length=1, max_length=100)],
    services: RunServicesDep,
) -> list[dict[str, Any]]:
    """Create several background runs (stateless unless an item names its `thread_id`).

    Every item's assistant is checked first, so an unknown one (or one the caller may not
    use) creates no run at all; each item then goes through the same checks as one run.
    """
    for item in body:
        await runnable_assistant(services.caller, services.db, item.assistant_id)
    return [run_json(await _submit(item, services, thread_id=item.thread_id)) for item in body]


@router.post("/runs/cancel", status_code=204)
async def cancel_many_runs(
    body: RunsCancel,
    db: DatabaseDep,
    engine: EngineDep,
    caller: CallerDep,
    action: Action = "interrupt",
) -> Response:
    """Cancel runs by id (optionally on one thread), or every run with a status: only runs on
    threads the caller may update (others are not found)."""
    access = await thread_access(
        caller,
        "update",
        body.thread_id,
        run_ids=body.run_ids,
        status=body.status,
        action=action,
    )
    if body.status is not None:
        if body.thread_id or body.run_ids:
            raise InvalidInputError(
                "give either status, or thread_id/run_ids, not both", field="status"
            )
        statuses = ("pending", "running") if body.status == "all" else (body.status,)
        run_ids = await run_store.runs_with_status(db, statuses, access=access)
    elif body.run_ids:
        run_ids = list(body.run_ids)
    elif body.thread_id is not None:
        await run_store.require_thread(db, body.thread_id, access)
        run_ids = await run_store.runs_with_status(
            db, run_store.IN_FLIGHT, thread_id=body.thread_id, access=access
        )
    else:
        raise InvalidInputError("give run_ids, thread_id or status", field="run_ids")
    await engine.cancel(
        run_ids,
        action=action,
        thread_id=body.thread_id,
        reason="cancelled via POST /runs/cancel",
        access=access,
    )
    return Response(status_code=204)
