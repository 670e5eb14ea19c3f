"""`/agents`: CRUD of agents (the assistants of the Agent Server API)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from server.deps import DatabaseDep, Limit, Offset
from server.schemas.chat import AgentCreate, AgentOut, AgentUpdate
from server.schemas.common import NOT_FOUND, Identifier, Page
from stores.sql import repositories as repo

router = APIRouter(prefix="/agents", tags=["agents"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_agent(body: AgentCreate, db: DatabaseDep) -> AgentOut:
    """Create an agent on a declared graph (`graph_id`, `chat` by default)."""
    values = repo.column_changes(body.model_dump())
    values["model"] = body.model.model_dump(exclude_none=True)
    return AgentOut.model_validate(await repo.agents.create(db, values))


@router.get("")
async def list_agents(
    db: DatabaseDep,
    limit: Limit = 50,
    offset: Offset = 0,
    graph_id: Annotated[Identifier | None, Query(description="Only agents of this graph.")] = None,
) -> Page[AgentOut]:
    """Agents, newest first."""
    filters = {"graph_id": graph_id} if graph_id is not None else None
    page = await repo.agents.list(db, limit=limit, offset=offset, filters=filters)
    return Page[AgentOut].model_validate(page)


@router.get("/{agent_id}", responses=NOT_FOUND)
async def get_agent(agent_id: uuid.UUID, db: DatabaseDep) -> AgentOut:
    """One agent."""
    return AgentOut.model_validate(await repo.agents.get(db, agent_id))


@router.patch("/{agent_id}", responses=NOT_FOUND)
async def update_agent(agent_id: uuid.UUID, body: AgentUpdate, db: DatabaseDep) -> AgentOut:
    """Change an agent; its `version` goes up by one."""
    changes = repo.column_changes(body.model_dump(exclude_unset=True))
    if body.model is not None:
        changes["model"] = body.model.model_dump(exclude_none=True)
    row = await repo.agents.update(db, agent_id, changes, bump_version=True)
    return AgentOut.model_validate(row)


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_agent(agent_id: uuid.UUID, db: DatabaseDep) -> None:
    """Delete an agent. Its conversations stay (with `agent_id` null) so no transcript is lost."""
    await repo.agents.delete(db, agent_id)
