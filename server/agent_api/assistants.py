"""Agent Server API `/assistants`: create, get, update, delete, search, count, graph, versions."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Response, status
from langchain_core.runnables import RunnableConfig

from server.agent_api.state import graph_schemas, search_page
from server.agent_api.threads import stop_runs
from server.deps import DatabaseDep, EngineDep, GraphsDep, ResourcesDep
from server.schemas.agent_api import (
    AssistantCount,
    AssistantCreate,
    AssistantSearch,
    AssistantSetLatest,
    AssistantUpdate,
    AssistantVersionsSearch,
)
from server.schemas.common import CONFLICT, NOT_FOUND
from stores.errors import InvalidInputError
from stores.sql import assistants as store
from stores.sql import threads as thread_store
from stores.sql.models import Agent, AgentVersion

router = APIRouter(prefix="/assistants", tags=["assistants"])


def assistant_json(agent: Agent) -> dict[str, Any]:
    """An assistant as langgraph-sdk's `Assistant`."""
    return {
        "assistant_id": str(agent.id),
        "graph_id": agent.graph_id,
        "config": agent.config,
        "context": agent.context,
        "metadata": agent.metadata_,
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
        "config": version.config,
        "context": version.context,
        "metadata": version.metadata_,
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


@router.post("", responses={**CONFLICT})
async def create_assistant(
    body: AssistantCreate, db: DatabaseDep, graphs: GraphsDep
) -> dict[str, Any]:
    """Create an assistant of a declared graph (`if_exists`: raise 409 or return the existing)."""
    graphs.require(body.graph_id)
    agent = await store.create_assistant(
        db,
        graph_id=body.graph_id,
        assistant_id=body.assistant_id,
        if_exists=body.if_exists,
        name=body.name or "Untitled",
        description=body.description or "",
        config=body.config,
        context=body.context,
        metadata=body.metadata,
    )
    return assistant_json(agent)


@router.post("/search")
async def search_assistants(body: AssistantSearch, db: DatabaseDep, response: Response) -> Any:
    """Assistants matching graph id, name (substring) and metadata (containment), paged."""
    rows, more = await store.search_assistants(
        db,
        graph_id=body.graph_id,
        name=body.name,
        metadata=body.metadata,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
    )
    return search_page(
        response, rows, more=more, offset=body.offset, to_json=assistant_json, select=body.select
    )


@router.post("/count")
async def count_assistants(body: AssistantCount, db: DatabaseDep) -> int:
    """How many assistants match the filters."""
    return await store.count_assistants(
        db, graph_id=body.graph_id, name=body.name, metadata=body.metadata
    )


@router.get("/{assistant_id}", responses={**NOT_FOUND})
async def get_assistant(assistant_id: str, db: DatabaseDep) -> dict[str, Any]:
    """One assistant, by id or by the graph id of its system assistant."""
    return assistant_json(await store.resolve_assistant(db, assistant_id))


@router.patch("/{assistant_id}", responses={**NOT_FOUND})
async def update_assistant(
    assistant_id: str, body: AssistantUpdate, db: DatabaseDep, graphs: GraphsDep
) -> dict[str, Any]:
    """Write a new version of an assistant and make it the latest (metadata is merged)."""
    agent = await store.resolve_assistant(db, assistant_id)
    if body.graph_id is not None:
        graphs.require(body.graph_id)
    updated = await store.update_assistant(
        db,
        agent.id,
        graph_id=body.graph_id,
        name=body.name,
        description=body.description,
        config=body.config,
        context=body.context,
        metadata=body.metadata,
    )
    return assistant_json(updated)


@router.delete("/{assistant_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**NOT_FOUND})
async def delete_assistant(
    assistant_id: str,
    db: DatabaseDep,
    resources: ResourcesDep,
    engine: EngineDep,
    delete_threads: Annotated[
        bool, Query(description="Also delete the assistant's threads.")
    ] = False,
) -> None:
    """Delete an assistant and its versions (and, if asked, its threads: runs cancelled first)."""
    agent = await store.resolve_assistant(db, assistant_id)
    thread_ids = await thread_store.threads_of_assistant(db, agent.id) if delete_threads else []
    await stop_runs(engine, db, thread_ids)
    await store.delete_assistant(db, agent.id, thread_ids=thread_ids)
    if thread_ids:
        saver = await resources.checkpoints.ready()
        await saver.aprune([str(i) for i in thread_ids], strategy="delete")


@router.get("/{assistant_id}/graph", responses={**NOT_FOUND})
async def get_assistant_graph(
    assistant_id: str,
    db: DatabaseDep,
    graphs: GraphsDep,
    xray: Annotated[str | None, Query(description="true, false, or a subgraph depth.")] = None,
) -> dict[str, Any]:
    """The assistant's graph as nodes and edges (`xray` draws subgraphs too)."""
    agent = await store.resolve_assistant(db, assistant_id)
    depth = _parse_xray(xray)
    config = cast(RunnableConfig, dict(agent.config))
    try:
        async with graphs.acquire(agent.graph_id, config, access="assistants.read") as graph:
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
    assistant_id: str, db: DatabaseDep, graphs: GraphsDep
) -> dict[str, Any]:
    """JSON schemas of the assistant's graph: input, output, state, config, context."""
    agent = await store.resolve_assistant(db, assistant_id)
    async with graphs.acquire(agent.graph_id, agent.config, access="assistants.read") as graph:
        return {"graph_id": agent.graph_id, **graph_schemas(graph)}


async def _subgraphs(
    assistant_id: str,
    db: DatabaseDep,
    graphs: GraphsDep,
    *,
    namespace: str | None,
    recurse: bool,
) -> dict[str, Any]:
    agent = await store.resolve_assistant(db, assistant_id)
    async with graphs.acquire(agent.graph_id, agent.config, access="assistants.read") as graph:
        return {
            ns: graph_schemas(subgraph)  # type: ignore[arg-type]
            async for ns, subgraph in graph.aget_subgraphs(namespace=namespace, recurse=recurse)
        }


@router.get("/{assistant_id}/subgraphs", responses={**NOT_FOUND})
async def get_assistant_subgraphs(
    assistant_id: str, db: DatabaseDep, graphs: GraphsDep, recurse: bool = False
) -> dict[str, Any]:
    """Schemas of the graph's subgraphs by namespace (`recurse` descends into nested ones)."""
    return await _subgraphs(assistant_id, db, graphs, namespace=None, recurse=recurse)


@router.get("/{assistant_id}/subgraphs/{namespace}", responses={**NOT_FOUND})
async def get_assistant_subgraphs_in(
    assistant_id: str, namespace: str, db: DatabaseDep, graphs: GraphsDep, recurse: bool = False
) -> dict[str, Any]:
    """Schemas of the subgraphs under `namespace`."""
    return await _subgraphs(assistant_id, db, graphs, namespace=namespace, recurse=recurse)


@router.post("/{assistant_id}/versions", responses={**NOT_FOUND})
async def list_assistant_versions(
    assistant_id: str, body: AssistantVersionsSearch, db: DatabaseDep
) -> list[dict[str, Any]]:
    """The assistant's versions, newest first (filtered by metadata containment)."""
    agent = await store.resolve_assistant(db, assistant_id)
    rows = await store.list_versions(
        db, agent.id, metadata=body.metadata, limit=body.limit, offset=body.offset
    )
    return [version_json(row) for row in rows]


@router.post("/{assistant_id}/latest", responses={**NOT_FOUND})
async def set_latest_assistant_version(
    assistant_id: str, body: AssistantSetLatest, db: DatabaseDep
) -> dict[str, Any]:
    """Make one of the assistant's versions the current one."""
    agent = await store.resolve_assistant(db, assistant_id)
    return assistant_json(await store.set_latest_version(db, agent.id, version=body.version))
