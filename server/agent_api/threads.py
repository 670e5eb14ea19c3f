"""Agent Server API `/threads`: CRUD, search, count, copy, prune, state (get/update), history."""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.encoders import jsonable_encoder
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import StateSnapshot

from server.agent_api.state import (
    apply_supersteps,
    cached_state,
    copy_checkpoints,
    empty_state,
    extract_path_value,
    history,
    read_state,
    search_page,
    snapshot_json,
    update_state,
)
from server.auth.caller import Caller, CallerDep
from server.deps import DatabaseDep, EngineDep, GraphsDep, ProjectDep, ResourcesDep, RunEventsDep
from server.redact import mask_secrets
from server.runs.engine import RunEngine
from server.runs.streaming import to_jsonable, validate_thread_stream_modes
from server.schemas.agent_api import (
    ThreadCount,
    ThreadCreate,
    ThreadHistory,
    ThreadPrune,
    ThreadSearch,
    ThreadStateAtCheckpoint,
    ThreadStateUpdate,
    ThreadUpdate,
)
from server.schemas.common import (
    CONFLICT,
    NOT_FOUND,
    TOO_MANY,
    ErrorBody,
    Responses,
    event_stream,
)
from server.sse import follow_thread_stream, parse_thread_event_id, sse_response
from stores.errors import ConflictError, InvalidInputError, NotFoundError
from stores.sql import runs as run_store
from stores.sql import thread_events
from stores.sql import threads as store
from stores.sql.assistants import assistant_key, or_system, resolve_assistant
from stores.sql.database import Database
from stores.sql.filters import Filter
from stores.sql.models import Conversation

NO_GRAPH: Responses = {
    409: {
        "model": ErrorBody,
        "description": "The thread is busy, or has no graph yet (no run, no metadata.graph_id).",
    }
}
router = APIRouter(
    prefix="/threads", tags=["threads"], responses={**NOT_FOUND, **CONFLICT, **TOO_MANY}
)


def ttl_json(thread: Conversation) -> dict[str, Any] | None:
    """The thread's TTL as langgraph-api shows it (`include=ttl`): None without one."""
    if thread.ttl_minutes is None:
        return None
    return {
        "strategy": thread.ttl_strategy or "delete",
        "ttl_minutes": thread.ttl_minutes,
        "expires_at": thread.updated_at + timedelta(minutes=thread.ttl_minutes),
    }


def thread_json(thread: Conversation, *, ttl: bool = False) -> dict[str, Any]:
    """A thread as langgraph-sdk's `Thread` (with its `ttl` when asked)."""
    shown: dict[str, Any] = {
        "thread_id": str(thread.id),
        "created_at": thread.created_at,
        "updated_at": thread.updated_at,
        "state_updated_at": thread.updated_at,
        "config": {},
        "metadata": mask_secrets(thread.metadata_),
        "status": thread.status,
        "values": thread.values_,
        "interrupts": thread.interrupts,
    }
    if ttl:
        shown["ttl"] = ttl_json(thread)
    return shown


# How long a delete waits for the thread's cancelled runs to stop before deleting anyway.
STOP_RUNS_TIMEOUT_S = 10.0


async def stop_runs(engine: RunEngine, db: Database, thread_ids: list[uuid.UUID]) -> None:
    """Cancel the threads' pending and running runs and wait (bounded) until they stop, so
    their streams end with their last event before the rows go."""
    for thread_id in thread_ids:
        active = await run_store.runs_with_status(db, ("pending", "running"), thread_id=thread_id)
        if not active:
            continue
        with contextlib.suppress(NotFoundError):  # a run deleted meanwhile needs no cancel
            await engine.cancel(active, thread_id=thread_id, reason="its thread was deleted")
        for run_id in active:
            with contextlib.suppress(TimeoutError):
                await engine.wait(run_id, timeout_s=STOP_RUNS_TIMEOUT_S)


async def prune_thread_data(
    engine: RunEngine,
    db: Database,
    saver: BaseCheckpointSaver[Any],
    thread_ids: list[uuid.UUID],
    *,
    strategy: store.TTLStrategy,
) -> list[uuid.UUID]:
    """Delete threads with their runs, messages and checkpoints (`delete`), or prune their
    checkpoints to the latest (`keep_latest`); returns the ids that existed.

    Raises:
        InvalidInputError: the saver cannot keep only the latest checkpoint (field `strategy`).
    """
    if not thread_ids:
        return []
    if strategy == "delete":
        await stop_runs(engine, db, thread_ids)
        pruned = await store.delete_threads(db, thread_ids)
        await saver.aprune([str(i) for i in thread_ids], strategy="delete")
        return pruned
    existing = await store.existing_thread_ids(db, thread_ids)
    try:
        await saver.aprune([str(i) for i in existing], strategy="keep_latest")
    except NotImplementedError as error:  # the saver cannot keep only the latest (DeltaChannel)
        raise InvalidInputError(str(error), field="strategy") from error
    return existing


async def _state_updated(db: Database, thread_id: uuid.UUID, state: StateSnapshot) -> None:
    """Put the thread's new state in its stream, as langgraph-api does after a state update."""
    data = {"state": snapshot_json(state), "thread_id": str(thread_id)}
    await thread_events.append_thread_event(db, thread_id, "state_update", to_jsonable(data))


def _status_after(state: StateSnapshot) -> Literal["idle", "interrupted"]:
    """A thread stopped before more nodes (or at an interrupt) is interrupted, else idle."""
    return "interrupted" if state.next or state.interrupts else "idle"


async def _graph_of(db: DatabaseDep, graphs: GraphsDep, thread: Conversation) -> str | None:
    """The id of the declared graph whose checkpoints the thread holds (None: none yet): the
    graph of its latest run (`metadata.graph_id`, which each run sets), as langgraph-api reads
    it, else its first assistant's. A thread whose runs switched graphs shows its state as the
    latest graph sees it (the next nodes, the tasks)."""
    latest = thread.metadata_.get("graph_id")
    if isinstance(latest, str) and latest in graphs:
        return latest
    graph_id = await store.graph_id_of(db, thread)
    return graph_id if graph_id is not None and graph_id in graphs else None


async def thread_access(
    caller: Caller, action: str, thread_id: uuid.UUID | None, /, **value: Any
) -> Filter | None:
    """The filter under which the caller may `action` the thread (`threads.<action>`)."""
    return await caller.authorize("threads", action, {"thread_id": thread_id, **value})


async def _seed_graph(
    db: DatabaseDep, graphs: GraphsDep, metadata: dict[str, Any], caller: Caller
) -> str:
    """The graph a new thread's supersteps are written with: `graph_id` or `assistant_id`."""
    graph_id = metadata.get("graph_id")
    if not isinstance(graph_id, str) and isinstance(metadata.get("assistant_id"), str):
        named = metadata["assistant_id"]
        access = await caller.authorize(
            "assistants", "read", {"assistant_id": assistant_key(named)}
        )
        graph_id = (await resolve_assistant(db, named, or_system(access))).graph_id
    if not isinstance(graph_id, str) or graph_id not in graphs:
        raise InvalidInputError(
            "supersteps need the thread's graph: set metadata.graph_id (or graph_id in the SDK)",
            field="supersteps",
        )
    return graph_id


async def _graph_or_409(
    db: DatabaseDep, graphs: GraphsDep, thread: Conversation, *, field: str
) -> str:
    """The thread's graph. A thread without one yet (no run, no metadata.graph_id) cannot
    have its state written or read at a checkpoint: a conflict with the thread's state (409),
    not a fault of the request (langgraph-api answers 400; the body is valid either way)."""
    graph = await _graph_of(db, graphs, thread)
    if graph is None:
        raise ConflictError(
            f"thread {thread.id} has no graph yet: create it with metadata.graph_id "
            "(or run an assistant on it) before writing its state",
            field=field,
        )
    return graph


@router.post("", responses={**CONFLICT})
async def create_thread(
    body: ThreadCreate,
    db: DatabaseDep,
    graphs: GraphsDep,
    resources: ResourcesDep,
    project: ProjectDep,
    caller: CallerDep,
) -> dict[str, Any]:
    """Create a thread (optionally with its id, a TTL, and seeded with `supersteps` of state
    updates); without a `ttl` it gets the project's `checkpointer.ttl.default_ttl`, if any."""
    value: dict[str, Any] = {
        "thread_id": body.thread_id,
        "metadata": body.metadata or {},
        "if_exists": body.if_exists,
        "ttl": body.ttl.model_dump() if body.ttl else None,
    }
    await caller.authorize("threads", "create", value)
    metadata: dict[str, Any] = value["metadata"] if isinstance(value["metadata"], dict) else {}
    graph_id = metadata.get("graph_id")
    if graph_id is not None and (not isinstance(graph_id, str) or graph_id not in graphs):
        raise InvalidInputError(
            f"metadata.graph_id {graph_id!r} is not a declared graph; declared: "
            f"{graphs.declared()}",
            field="metadata.graph_id",
        )
    seed_graph: str | None = None
    if body.supersteps:
        if any(u.command for step in body.supersteps for u in step.updates):
            raise InvalidInputError(
                "supersteps with a command are not supported; give values and as_node",
                field="supersteps",
            )
        seed_graph = await _seed_graph(db, graphs, metadata, caller)
    ttl = store.ThreadTTL("delete", body.ttl.ttl) if body.ttl else project.default_thread_ttl()
    thread, created = await store.create_thread(
        db,
        thread_id=body.thread_id,
        metadata=metadata,
        if_exists=body.if_exists,
        ttl=ttl,
        access=await thread_access(caller, "read", body.thread_id),
    )
    if body.supersteps and seed_graph is not None and created:
        steps = [[(u.values, u.as_node) for u in step.updates] for step in body.supersteps]
        try:
            async with graphs.acquire(seed_graph, access="threads.update") as graph:
                latest = await apply_supersteps(graph, thread.id, steps)
        except InvalidInputError:  # nothing of a rejected thread stays behind
            await store.delete_threads(db, [thread.id])
            await (await resources.checkpoints.ready()).adelete_thread(str(thread.id))
            raise
        values, interrupts = cached_state(latest)
        await store.set_thread_state_cache(
            db,
            thread.id,
            values=values,
            interrupts=interrupts,
            status=_status_after(latest),
        )
        await _state_updated(db, thread.id, latest)
        thread = await store.get_thread(db, thread.id)
    return thread_json(thread)


@router.post("/search")
async def search_threads(
    body: ThreadSearch, db: DatabaseDep, response: Response, caller: CallerDep
) -> Any:
    """Threads matching metadata and values (containment), status and ids, paged."""
    value: dict[str, Any] = {
        "metadata": body.metadata or {},
        "values": body.values,
        "status": body.status,
        "limit": body.limit,
        "offset": body.offset,
        "ids": body.ids,
    }
    access = await caller.authorize("threads", "search", value)
    rows, more = await store.search_threads(
        db,
        metadata=value["metadata"],
        values=value["values"],
        status=body.status,
        ids=body.ids,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
        access=access,
    )

    def extracted(thread: dict[str, Any]) -> dict[str, Any]:
        data = jsonable_encoder(thread)
        return {"extracted": {alias: extract_path_value(data, path) for alias, path in extract}}

    extract = list((body.extract or {}).items())
    return search_page(
        response,
        rows,
        more=more,
        offset=body.offset,
        to_json=thread_json,
        select=body.select,
        added=extracted if extract else None,
    )


@router.post("/count")
async def count_threads(body: ThreadCount, db: DatabaseDep, caller: CallerDep) -> int:
    """How many threads match the filters."""
    value: dict[str, Any] = {
        "metadata": body.metadata or {},
        "values": body.values,
        "status": body.status,
    }
    access = await caller.authorize("threads", "search", value)
    return await store.count_threads(
        db, metadata=value["metadata"], values=value["values"], status=body.status, access=access
    )


@router.post("/prune")
async def prune_threads(
    body: ThreadPrune,
    db: DatabaseDep,
    resources: ResourcesDep,
    engine: EngineDep,
    caller: CallerDep,
) -> dict[str, int]:
    """Delete threads (`delete`) or only their older checkpoints (`keep_latest`); only the
    threads the caller may delete count."""
    saver = await resources.checkpoints.ready()
    ids = list(dict.fromkeys(body.thread_ids))
    access = await thread_access(caller, "delete", None, thread_ids=ids)
    ids = await store.existing_thread_ids(db, ids, access)
    pruned = await prune_thread_data(engine, db, saver, ids, strategy=body.strategy)
    return {"pruned_count": len(pruned)}


@router.get("/{thread_id}", responses={**NOT_FOUND})
async def get_thread(
    thread_id: uuid.UUID,
    db: DatabaseDep,
    caller: CallerDep,
    include: Annotated[
        str | None, Query(max_length=200, description="Comma-separated extras: `ttl`.")
    ] = None,
) -> dict[str, Any]:
    """One thread, with its cached latest values and interrupts (and its TTL on request)."""
    extras = {part.strip() for part in (include or "").split(",") if part.strip()}
    access = await thread_access(caller, "read", thread_id)
    return thread_json(await store.get_thread(db, thread_id, access), ttl="ttl" in extras)


@router.patch("/{thread_id}", responses={**NOT_FOUND})
async def update_thread(
    thread_id: uuid.UUID, body: ThreadUpdate, db: DatabaseDep, caller: CallerDep
) -> dict[str, Any]:
    """Merge metadata into the thread's; a `ttl` replaces its TTL, counted from now."""
    value: dict[str, Any] = {"thread_id": thread_id, "metadata": body.metadata or {}}
    access = await caller.authorize("threads", "update", value)
    ttl = store.ThreadTTL("delete", body.ttl.ttl) if body.ttl else None
    metadata = value["metadata"] if isinstance(value["metadata"], dict) else {}
    return thread_json(
        await store.update_thread(db, thread_id, metadata=metadata, ttl=ttl, access=access)
    )


@router.delete("/{thread_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**NOT_FOUND})
async def delete_thread(
    thread_id: uuid.UUID,
    db: DatabaseDep,
    resources: ResourcesDep,
    engine: EngineDep,
    caller: CallerDep,
) -> None:
    """Delete a thread with its runs (cancelled first), messages and checkpoints."""
    access = await thread_access(caller, "delete", thread_id)
    await store.get_thread(db, thread_id, access)
    await stop_runs(engine, db, [thread_id])
    await store.delete_threads(db, [thread_id], access)
    saver = await resources.checkpoints.ready()
    await saver.adelete_thread(str(thread_id))


@router.post("/{thread_id}/copy", responses={**NOT_FOUND})
async def copy_thread(
    thread_id: uuid.UUID, db: DatabaseDep, resources: ResourcesDep, caller: CallerDep
) -> dict[str, Any]:
    """A new thread with the same metadata and every checkpoint of this one; the copy belongs
    to whoever made it (`threads.create` stamps it)."""
    access = await thread_access(caller, "read", thread_id)
    thread = await store.get_thread(db, thread_id, access)
    if thread.status == "busy":
        raise ConflictError(f"thread {thread_id} is busy; copy it when its run ends")
    value: dict[str, Any] = {"thread_id": None, "metadata": dict(thread.metadata_)}
    await caller.authorize("threads", "create", value)
    copy = await store.copy_thread_row(
        db, thread_id, access=access, metadata=value["metadata"] or {}
    )
    saver = await resources.checkpoints.ready()
    await copy_checkpoints(saver, thread_id, copy.id)
    return thread_json(copy)


@router.get("/{thread_id}/state", responses={**NOT_FOUND})
async def get_thread_state(
    thread_id: uuid.UUID,
    db: DatabaseDep,
    graphs: GraphsDep,
    caller: CallerDep,
    subgraphs: bool = False,
) -> dict[str, Any]:
    """The thread's latest state (values, next nodes, tasks, checkpoint, interrupts)."""
    thread = await store.get_thread(db, thread_id, await thread_access(caller, "read", thread_id))
    graph_id = await _graph_of(db, graphs, thread)
    if graph_id is None:
        return empty_state()
    async with graphs.acquire(graph_id, access="threads.read", user=caller.user) as graph:
        return await read_state(graph, thread_id, subgraphs=subgraphs)


@router.post("/{thread_id}/state", responses={**NOT_FOUND, **NO_GRAPH})
async def update_thread_state(
    thread_id: uuid.UUID,
    body: ThreadStateUpdate,
    db: DatabaseDep,
    graphs: GraphsDep,
    caller: CallerDep,
) -> dict[str, Any]:
    """Write values to the thread's state as if node `as_node` returned them; a new checkpoint."""
    access = await thread_access(caller, "update", thread_id)
    thread = await store.get_thread(db, thread_id, access)
    if thread.status == "busy":
        raise ConflictError(f"thread {thread_id} is busy; update its state when its run ends")
    graph_id = await _graph_or_409(db, graphs, thread, field="thread_id")
    checkpoint_id = body.checkpoint_id or (
        body.checkpoint.checkpoint_id if body.checkpoint else None
    )
    async with graphs.acquire(graph_id, access="threads.update", user=caller.user) as graph:
        written, latest = await update_state(
            graph,
            thread_id,
            values=body.values,
            as_node=body.as_node,
            checkpoint_id=checkpoint_id,
            checkpoint_ns=body.checkpoint.checkpoint_ns if body.checkpoint else "",
        )
    values, interrupts = cached_state(latest)
    await store.set_thread_state_cache(
        db,
        thread_id,
        values=values,
        interrupts=interrupts,
        status=_status_after(latest),
    )
    await _state_updated(db, thread_id, latest)
    return written


@router.post("/{thread_id}/state/checkpoint", responses={**NOT_FOUND, **NO_GRAPH})
async def get_thread_state_at(
    thread_id: uuid.UUID,
    body: ThreadStateAtCheckpoint,
    db: DatabaseDep,
    graphs: GraphsDep,
    caller: CallerDep,
) -> dict[str, Any]:
    """The thread's state at a checkpoint given as an object (id, namespace, map)."""
    thread = await store.get_thread(db, thread_id, await thread_access(caller, "read", thread_id))
    graph_id = await _graph_or_409(db, graphs, thread, field="checkpoint")
    async with graphs.acquire(graph_id, access="threads.read", user=caller.user) as graph:
        return await read_state(
            graph,
            thread_id,
            checkpoint_id=body.checkpoint.checkpoint_id,
            checkpoint_ns=body.checkpoint.checkpoint_ns,
            checkpoint_map=body.checkpoint.checkpoint_map,
            subgraphs=body.subgraphs,
        )


@router.get("/{thread_id}/state/{checkpoint_id}", responses={**NOT_FOUND, **NO_GRAPH})
async def get_thread_state_by_id(
    thread_id: uuid.UUID,
    checkpoint_id: str,
    db: DatabaseDep,
    graphs: GraphsDep,
    caller: CallerDep,
    subgraphs: bool = False,
) -> dict[str, Any]:
    """The thread's state at checkpoint `checkpoint_id`."""
    thread = await store.get_thread(db, thread_id, await thread_access(caller, "read", thread_id))
    graph_id = await _graph_or_409(db, graphs, thread, field="checkpoint_id")
    async with graphs.acquire(graph_id, access="threads.read", user=caller.user) as graph:
        return await read_state(graph, thread_id, checkpoint_id=checkpoint_id, subgraphs=subgraphs)


@router.post("/{thread_id}/history", responses={**NOT_FOUND})
async def get_thread_history(
    thread_id: uuid.UUID,
    body: ThreadHistory,
    db: DatabaseDep,
    graphs: GraphsDep,
    caller: CallerDep,
) -> list[dict[str, Any]]:
    """Past states of the thread, newest first (`before`, `metadata`, `checkpoint` narrow it)."""
    thread = await store.get_thread(db, thread_id, await thread_access(caller, "read", thread_id))
    graph_id = await _graph_of(db, graphs, thread)
    if graph_id is None:
        return []
    before = body.before if isinstance(body.before, str) or body.before is None else None
    if body.before is not None and not isinstance(body.before, str):
        before = body.before.checkpoint_id
    async with graphs.acquire(graph_id, access="threads.read", user=caller.user) as graph:
        return await history(
            graph,
            thread_id,
            limit=body.limit,
            before=before,
            metadata=body.metadata,
            checkpoint_id=body.checkpoint.checkpoint_id if body.checkpoint else None,
            checkpoint_ns=body.checkpoint.checkpoint_ns if body.checkpoint else "",
        )


@router.get("/{thread_id}/history", responses={**NOT_FOUND})
async def get_thread_history_by_query(
    thread_id: uuid.UUID,
    db: DatabaseDep,
    graphs: GraphsDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1,
    before: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> list[dict[str, Any]]:
    """Past states of the thread, newest first: the GET form langgraph-api also serves
    (`limit`, default 1 as there, and `before` a checkpoint id)."""
    body = ThreadHistory(limit=limit, before=before)
    return await get_thread_history(thread_id, body, db, graphs, caller)


# How many `stream_mode` / `stream_modes` values one request may give.
MAX_STREAM_MODE_VALUES = 10


@router.get(
    "/{thread_id}/stream",
    responses={
        **NOT_FOUND,
        200: event_stream(
            "The thread's events as server-sent events, for as long as the client listens."
        ),
    },
)
async def join_thread_stream(
    thread_id: uuid.UUID,
    db: DatabaseDep,
    events: RunEventsDep,
    caller: CallerDep,
    stream_modes: Annotated[
        list[str] | None,
        Query(description="langgraph-api's name: modes, comma-separated (default run_modes)."),
    ] = None,
    stream_mode: Annotated[
        list[str] | None, Query(description="The SDKs' name for the same, repeated.")
    ] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """The thread's events across its runs (SSE), live: each run's events (`run_modes`), its
    start and end (`lifecycle`), state updates (`state_update`). `Last-Event-ID: <id>` resumes
    after that event, `-` replays what is kept from the start."""
    # 404 first: an unknown thread, or one the caller may not read (`threads.read`).
    await store.get_thread(db, thread_id, await thread_access(caller, "read", thread_id))
    after = parse_thread_event_id(last_event_id)  # 422 naming Last-Event-ID
    for field, values in (("stream_modes", stream_modes), ("stream_mode", stream_mode)):
        if values and (len(values) > MAX_STREAM_MODE_VALUES or any(len(v) > 100 for v in values)):
            raise InvalidInputError(
                f"{field}: at most {MAX_STREAM_MODE_VALUES} values of 100 characters", field=field
            )
        try:
            validate_thread_stream_modes(values or [])
        except ValueError as error:
            raise InvalidInputError(str(error), field=field) from error
    modes = validate_thread_stream_modes([*(stream_modes or []), *(stream_mode or [])])
    return sse_response(follow_thread_stream(events, db, thread_id, after=after, modes=modes))
