"""Who owns each knowledge collection (`collections.metadata`: `owner`, or `created_by: system`
for the server's own, such as the default collection and the bundled samples)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from stores.errors import NotFoundError
from stores.sql.database import Database
from stores.sql.filters import Filter, filter_clause
from stores.sql.models import Collection

SYSTEM: dict[str, Any] = {"created_by": "system"}


def visible(access: Filter | None) -> Any:
    """The condition under which a collection satisfies an auth filter."""
    return filter_clause(Collection.metadata_, access)


async def visible_names(db: Database, access: Filter | None) -> list[str]:
    """The names of the collections that satisfy `access`."""
    async with db.sessions() as session:
        rows = await session.scalars(
            select(Collection.name).where(visible(access)).order_by(Collection.name)
        )
        return list(rows.all())


async def require_collection(db: Database, name: str, access: Filter | None) -> None:
    """`NotFoundError` (field `collection`) unless the collection exists and satisfies
    `access`."""
    async with db.sessions() as session:
        found = await session.scalar(
            select(Collection.name).where(Collection.name == name, visible(access))
        )
    if found is None:
        raise NotFoundError("collection", name, field="collection")


async def claim_collection(
    db: Database, name: str, *, metadata: Mapping[str, Any], access: Filter | None
) -> bool:
    """Make `name` a collection with `metadata` (its creator's stamp) if it is new; else it
    must satisfy `access` (the caller's right to change it). Returns whether it is new.

    Raises:
        NotFoundError: it exists but does not satisfy `access` (field `collection`).
    """
    async with db.sessions.begin() as session:
        created = await session.scalar(
            insert(Collection)
            .values(name=name, metadata_=dict(metadata))
            .on_conflict_do_nothing()
            .returning(Collection.name)
        )
    if created is not None:
        return True
    await require_collection(db, name, access)
    return False


async def ensure_system_collection(db: Database, name: str) -> None:
    """Record `name` as one of the server's own collections, unless it has an owner already."""
    async with db.sessions.begin() as session:
        await session.execute(
            insert(Collection).values(name=name, metadata_=dict(SYSTEM)).on_conflict_do_nothing()
        )
