"""Agent Server API `/assistants`: create, get, update, delete, search, count, graph, versions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Response, status
from langchain_core.runnables import RunnableConfig

from server.agent_api.configurable import mirrored
from server.agent_api.state import graph_schemas, search_page
from server.agent_api.threads import stop_runs
from server.auth.access import refuse_if_readable
from server.auth.caller import Caller, CallerDep
from server.deps import DatabaseDep, EngineDep, GraphsDep, ResourcesDep
from server.redact import mask_secrets
from server.schemas.agent_api import (
    AssistantCount,
    AssistantCreate,
    AssistantSearch,
    AssistantSetLatest,
    AssistantUpdate,
    AssistantVersionsSearch,
)
from server.schemas.common import CONFLICT, NOT_FOUND
from stores.errors import InvalidInputError, NotFoundError
from stores.sql import assistants as store
from stores.sql import threads as thread_store
from stores.sql.models import Agent, AgentVersion

router = APIRouter(prefix="/assistants", tags=["assistants"], responses={**NOT_FOUND, **CONFLICT})


def assistant_json(agent: Agent) -> dict[str, Any]:
    """An assistant as langgraph-sdk's `Assistant` (secret-looking values masked)."""
    return {
        "assistant_id": str(agent.id),
        "graph_id": agent.graph_id,
        "config": mask_secrets(agent.config),
        "context": mask_secrets(agent.context),
        "metadata": mask_secrets(agent.metadata_),
        "name": agent.name,
        "description": agent.description or None,
        "version": agent.version,
        "created_at": agent.created_at,
        "updated_at": agent.updated_at,
    }


def version_json(version: AgentVersion) -> dict[str, Any]:
    """An assistant version as langgraph-sdk's `AssistantVersion`."""
    return {
        "assistant_id": str(version.agent_id),
        "graph_id": version.graph_id,
        "config": mask_secrets(version.config),
        "context": mask_secrets(version.context),
        "metadata": mask_secrets(version.metadata_),
        "name": version.name,
        "description": version.description or None,
        "version": version.version,
        "created_at": version.created_at,
    }


def _parse_xray(value: str | None) -> bool | int:
    if value is None or value in ("false", "False", "0"):
        return False
    if value in ("true", "True"):
        return True
    try:
        depth = int(value)
    except ValueError:
        depth = 0
    if depth <= 0:
        raise InvalidInputError("xray must be true, false or a positive integer", field="xray")
    return depth


async def readable_assistant(caller: Caller, db: DatabaseDep, assistant_id: str) -> Agent:
    """The assistant if the caller may read it (`assistants.read`, applied in SQL), else 404."""
    key = store.assistant_key(assistant_id)
    access = await caller.authorize("assistants", "read", {"assistant_id": key})
    return await store.resolve_assistant(db, assistant_id, access)


async def _changing(
    caller: Caller, db: DatabaseDep, assistant_id: str, action: str, value: dict[str, Any]
) -> Any:
    """The filter under which the caller may `action` the assistant (`value` may be changed by
    the handler)."""
    value["assistant_id"] = store.assistant_key(assistant_id)
    return await caller.authorize("assistants", action, value)


async def _refuse(caller: Caller, db: DatabaseDep, assistant_id: str) -> None:
    await refuse_if_readable(
        caller,
        "assistants",
        {"assistant_id": store.assistant_key(assistant_id)},
        lambda access: store.resolve_assistant(db, assistant_id, access),
        what=f"assistant {assistant_id}",
    )


@router.post("", responses={**CONFLICT})
async def create_assistant(
    body: AssistantCreate, db: DatabaseDep, graphs: GraphsDep, caller: CallerDep
) -> dict[str, Any]:
    """Create an assistant of a declared graph (`if_exists`: raise 409 or return the existing)."""
    graphs.require(body.graph_id)
    value: dict[str, Any] = {
        "assistant_id": body.assistant_id,
        "graph_id": body.graph_id,
        "config": body.config,
        "context": body.context,
        "metadata": body.metadata or {},
        "if_exists": body.if_exists,
        "name": body.name or "Untitled",
    }
    await caller.authorize("assistants", "create", value)
    # As langgraph-api: `config.configurable` and `context` mirror each other (400 for both).
    value["config"], context = mirrored(value["config"], value["context"])
    value["context"] = context or {}
    read = await caller.authorize("assistants", "read", {"assistant_id": body.assistant_id})
    agent = await store.create_assistant(
        db,
        graph_id=body.graph_id,
        assistant_id=body.assistant_id,
        if_exists=body.if_exists,
        name=value["name"],
        description=body.description or "",
        config=value["config"],
        context=value["context"],
        metadata=value["metadata"],
        access=read,
    )
    return assistant_json(agent)


@router.post("/search")
async def search_assistants(
    body: AssistantSearch, db: DatabaseDep, response: Response, caller: CallerDep
) -> Any:
    """Assistants matching graph id, name (substring) and metadata (containment), paged."""
    value: dict[str, Any] = {
        "graph_id": body.graph_id,
        "metadata": body.metadata or {},
        "limit": body.limit,
        "offset": body.offset,
    }
    access = await caller.authorize("assistants", "search", value)
    rows, more = await store.search_assistants(
        db,
        graph_id=value["graph_id"],
        name=body.name,
        metadata=value["metadata"],
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
        access=access,
    )
    return search_page(
        response, rows, more=more, offset=body.offset, to_json=assistant_json, select=body.select
    )


@router.post("/count")
async def count_assistants(body: AssistantCount, db: DatabaseDep, caller: CallerDep) -> int:
    """How many assistants match the filters."""
    value: dict[str, Any] = {"graph_id": body.graph_id, "metadata": body.metadata or {}}
    access = await caller.authorize("assistants", "search", value)
    return await store.count_assistants(
        db, graph_id=value["graph_id"], name=body.name, metadata=value["metadata"], access=access
    )


@router.get("/{assistant_id}", responses={**NOT_FOUND})
async def get_assistant(assistant_id: str, db: DatabaseDep, caller: CallerDep) -> dict[str, Any]:
    """One assistant, by id or by the graph id of its system assistant."""
    return assistant_json(await readable_assistant(caller, db, assistant_id))


@router.patch("/{assistant_id}", responses={**NOT_FOUND})
async def update_assistant(
    assistant_id: str,
    body: AssistantUpdate,
    db: DatabaseDep,
    graphs: GraphsDep,
    caller: CallerDep,
) -> dict[str, Any]:
    """Write a new version of an assistant and make it the latest (metadata is merged)."""
    if body.graph_id is not None:
        graphs.require(body.graph_id)
    value: dict[str, Any] = {
        "graph_id": body.graph_id,
        "config": body.config,
        "context": body.context,
        "metadata": body.metadata or {},
        "name": body.name,
    }
    access = await _changing(caller, db, assistant_id, "update", value)
    # As langgraph-api: a given `configurable` is the new context, a given context the new
    # `configurable` (400 for both); an empty config keeps the version's config.
    config, value["context"] = mirrored(value["config"], value["context"])
    value["config"] = config or None
    try:
        updated = await store.update_assistant(
            db,
            value["assistant_id"],
            graph_id=value["graph_id"],
            name=value["name"],
            description=body.description,
            config=value["config"],
            context=value["context"],
            metadata=value["metadata"] or None,
            access=access,
        )
    except NotFoundError:
        await _refuse(caller, db, assistant_id)
        raise NotFoundError("assistant", assistant_id, field="assistant_id") from None
    return assistant_json(updated)


@router.delete("/{assistant_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**NOT_FOUND})
async def delete_assistant(
    assistant_id: str,
    db: DatabaseDep,
    resources: ResourcesDep,
    engine: EngineDep,
    caller: CallerDep,
    delete_threads: Annotated[
        bool, Query(description="Also delete the assistant's threads.")
    ] = False,
) -> None:
    """Delete an assistant and its versions (and, if asked, its threads: runs cancelled first,
    only the threads the caller may delete)."""
    access = await _changing(caller, db, assistant_id, "delete", {})
    try:
        agent = await store.resolve_assistant(db, assistant_id, access)
    except NotFoundError:
        await _refuse(caller, db, assistant_id)
        raise
    thread_ids: list[uuid.UUID] = []
    if delete_threads:
        threads_access = await caller.authorize("threads", "delete", {"thread_id": None})
        thread_ids = await thread_store.threads_of_assistant(db, agent.id, threads_access)
    await stop_runs(engine, db, thread_ids)
    await store.delete_assistant(db, agent.id, thread_ids=thread_ids, access=access)
    if thread_ids:
        saver = await resources.checkpoints.ready()
        await saver.aprune([str(i) for i in thread_ids], strategy="delete")


@router.get("/{assistant_id}/graph", responses={**NOT_FOUND})
async def get_assistant_graph(
    assistant_id: str,
    db: DatabaseDep,
    graphs: GraphsDep,
    caller: CallerDep,
    xray: Annotated[str | None, Query(description="true, false, or a subgraph depth.")] = None,
) -> dict[str, Any]:
    """The assistant's graph as nodes and edges (`xray` draws subgraphs too)."""
    agent = await readable_assistant(caller, db, assistant_id)
    depth = _parse_xray(xray)
    config = cast(RunnableConfig, dict(agent.config))
    try:
        async with graphs.acquire(
            agent.graph_id, config, access="assistants.read", user=caller.user
        ) as graph:
            drawable = await graph.aget_graph(config=config, xray=depth)
    except NotImplementedError as error:
        raise InvalidInputError(
            f"graph {agent.graph_id!r} cannot be drawn", field="assistant_id"
        ) from error
    drawn: dict[str, Any] = drawable.to_json()
    for node in drawn.get("nodes", []):
        data = node.get("data")
        if isinstance(data, dict):
            data.pop("id", None)
    return drawn


@router.get("/{assistant_id}/schemas", responses={**NOT_FOUND})
async def get_assistant_schemas(
    assistant_id: str, db: DatabaseDep, graphs: GraphsDep, caller: CallerDep
) -> dict[str, Any]:
    """JSON schemas of the assistant's graph: input, output, state, config, context."""
    agent = await readable_assistant(caller, db, assistant_id)
    async with graphs.acquire(
        agent.graph_id, agent.config, access="assistants.read", user=caller.user
    ) as graph:
        return {"graph_id": agent.graph_id, **graph_schemas(graph)}


async def _subgraphs(
    assistant_id: str,
    db: DatabaseDep,
    graphs: GraphsDep,
    caller: Caller,
    *,
    namespace: str | None,
    recurse: bool,
) -> dict[str, Any]:
    agent = await readable_assistant(caller, db, assistant_id)
    async with graphs.acquire(
        agent.graph_id, agent.config, access="assistants.read", user=caller.user
    ) as graph:
        return {
            ns: graph_schemas(subgraph)  # type: ignore[arg-type]
            async for ns, subgraph in graph.aget_subgraphs(namespace=namespace, recurse=recurse)
        }


@router.get("/{assistant_id}/subgraphs", responses={**NOT_FOUND})
async def get_assistant_subgraphs(
    assistant_id: str,
    db: DatabaseDep,
    graphs: GraphsDep,
    caller: CallerDep,
    recurse: bool = False,
) -> dict[str, Any]:
    """Schemas of the graph's subgraphs by namespace (`recurse` descends into nested ones)."""
    return await _subgraphs(assistant_id, db, graphs, caller, namespace=None, recurse=recurse)


@router.get("/{assistant_id}/subgraphs/{namespace}", responses={**NOT_FOUND})
async def get_assistant_subgraphs_in(
    assistant_id: str,
    namespace: str,
    db: DatabaseDep,
    graphs: GraphsDep,
    caller: CallerDep,
    recurse: bool = False,
) -> dict[str, Any]:
    """Schemas of the subgraphs under `namespace`."""
    return await _subgraphs(assistant_id, db, graphs, caller, namespace=namespace, recurse=recurse)


@router.post("/{assistant_id}/versions", responses={**NOT_FOUND})
async def list_assistant_versions(
    assistant_id: str, body: AssistantVersionsSearch, db: DatabaseDep, caller: CallerDep
) -> list[dict[str, Any]]:
    """The assistant's versions, newest first (filtered by metadata containment)."""
    key = store.assistant_key(assistant_id)
    access = await caller.authorize("assistants", "read", {"assistant_id": key})
    rows = await store.list_versions(
        db, key, metadata=body.metadata, limit=body.limit, offset=body.offset, access=access
    )
    return [version_json(row) for row in rows]


@router.post("/{assistant_id}/latest", responses={**NOT_FOUND})
async def set_latest_assistant_version(
    assistant_id: str, body: AssistantSetLatest, db: DatabaseDep, caller: CallerDep
) -> dict[str, Any]:
    """Make one of the assistant's versions the current one."""
    access = await _changing(caller, db, assistant_id, "update", {"version": body.version})
    try:
        await store.resolve_assistant(db, assistant_id, access)
    except NotFoundError:
        await _refuse(caller, db, assistant_id)
        raise
    key = store.assistant_key(assistant_id)
    return assistant_json(
        await store.set_latest_version(db, key, version=body.version, access=access)
    )
