"""`/agents`: CRUD of agents (the assistants of the Agent Server API)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from server.auth.access import refuse_if_readable
from server.auth.caller import Caller, CallerDep
from server.deps import DatabaseDep, Limit, Offset
from server.routes.users import OWNER_KEYS
from server.schemas.chat import AgentCreate, AgentOut, AgentUpdate
from server.schemas.common import NOT_FOUND, Identifier, Page
from stores.errors import NotFoundError
from stores.sql import repositories as repo

router = APIRouter(prefix="/agents", tags=["agents"])


async def _refuse(caller: Caller, db: DatabaseDep, agent_id: uuid.UUID) -> None:
    await refuse_if_readable(
        caller,
        "assistants",
        {"assistant_id": agent_id},
        lambda access: repo.agents.get(db, agent_id, access=access),
        what=f"agent {agent_id}",
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_agent(body: AgentCreate, db: DatabaseDep, caller: CallerDep) -> AgentOut:
    """Create an agent on a declared graph (`graph_id`, `chat` by default)."""
    values = repo.column_changes(body.model_dump())
    values["model"] = body.model.model_dump(exclude_none=True)
    value: dict[str, Any] = {
        "assistant_id": None,
        "graph_id": body.graph_id,
        "config": values["config"],
        "context": {},
        "metadata": values["metadata_"],
        "name": body.name,
    }
    await caller.authorize("assistants", "create", value)
    values["metadata_"] = value["metadata"]
    return AgentOut.model_validate(await repo.agents.create(db, values))


@router.get("")
async def list_agents(
    db: DatabaseDep,
    caller: CallerDep,
    limit: Limit = 50,
    offset: Offset = 0,
    graph_id: Annotated[Identifier | None, Query(description="Only agents of this graph.")] = None,
) -> Page[AgentOut]:
    """Agents, newest first (the caller's and the system ones)."""
    access = await caller.authorize(
        "assistants", "search", {"graph_id": graph_id, "limit": limit, "offset": offset}
    )
    filters = {"graph_id": graph_id} if graph_id is not None else None
    page = await repo.agents.list(db, limit=limit, offset=offset, filters=filters, access=access)
    return Page[AgentOut].model_validate(page)


@router.get("/{agent_id}", responses=NOT_FOUND)
async def get_agent(agent_id: uuid.UUID, db: DatabaseDep, caller: CallerDep) -> AgentOut:
    """One agent."""
    access = await caller.authorize("assistants", "read", {"assistant_id": agent_id})
    return AgentOut.model_validate(await repo.agents.get(db, agent_id, access=access))


@router.patch("/{agent_id}", responses=NOT_FOUND)
async def update_agent(
    agent_id: uuid.UUID, body: AgentUpdate, db: DatabaseDep, caller: CallerDep
) -> AgentOut:
    """Change an agent; its `version` goes up by one."""
    changes = repo.column_changes(body.model_dump(exclude_unset=True))
    if body.model is not None:
        changes["model"] = body.model.model_dump(exclude_none=True)
    value: dict[str, Any] = {
        "assistant_id": agent_id,
        "graph_id": body.graph_id,
        "config": body.config,
        "metadata": dict(changes.get("metadata_") or {}),
        "name": body.name,
    }
    access = await caller.authorize("assistants", "update", value)
    if "metadata_" in changes and isinstance(value["metadata"], dict):
        changes["metadata_"] = value["metadata"]
    try:
        row = await repo.agents.update(
            db, agent_id, changes, bump_version=True, access=access, keep_metadata=OWNER_KEYS
        )
    except NotFoundError:
        await _refuse(caller, db, agent_id)
        raise
    return AgentOut.model_validate(row)


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_agent(agent_id: uuid.UUID, db: DatabaseDep, caller: CallerDep) -> None:
    """Delete an agent. Its conversations stay (with `agent_id` null) so no transcript is lost."""
    access = await caller.authorize("assistants", "delete", {"assistant_id": agent_id})
    try:
        await repo.agents.delete(db, agent_id, access=access)
    except NotFoundError:
        await _refuse(caller, db, agent_id)
        raise
