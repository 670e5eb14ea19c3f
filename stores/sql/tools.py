"""The `tools` table: the built-in tools, their descriptions and JSON schemas, synced at start."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from stores.sql.database import Database
from stores.sql.models import Tool


async def sync_tools(db: Database, tools: Sequence[Mapping[str, Any]]) -> None:
    """Upsert one row per tool (`name`, `description`, `parameters`, `cacheable`).

    `enabled` is left as it is on existing rows, so an operator's switch survives restarts.
    """
    if not tools:
        return
    stmt = insert(Tool).values([dict(tool) for tool in tools])
    stmt = stmt.on_conflict_do_update(
        index_elements=[Tool.name],
        set_={
            "description": stmt.excluded.description,
            "parameters": stmt.excluded.parameters,
            "cacheable": stmt.excluded.cacheable,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    async with db.sessions.begin() as session:
        await session.execute(stmt)


async def list_tools(db: Database) -> Sequence[Tool]:
    """Every tool row, by name."""
    async with db.sessions() as session:
        return (await session.scalars(select(Tool).order_by(Tool.name))).all()
