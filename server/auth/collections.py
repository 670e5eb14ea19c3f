"""Knowledge collections and who may use them (resource `collections`): what a caller's runs
search whatever the agent or the model asks for, what `/documents` and `/search` show them,
and where they may upload."""

from __future__ import annotations

from typing import Any

from server.auth.access import refuse_if_readable
from server.auth.caller import Caller
from stores.errors import NotFoundError
from stores.sql import collections as collection_store
from stores.sql.database import Database


async def collections_for(caller: Caller, db: Database, action: str) -> list[str] | None:
    """The collections the caller may `action` (`collections.<action>`, applied in SQL); None
    when nothing restricts them (an open server, an admin)."""
    if caller.authorizer is None:
        return None
    access = await caller.authorize("collections", action, {"collection": None})
    if access is None:
        return None
    return await collection_store.visible_names(db, access)


async def readable_collections(caller: Caller, db: Database) -> list[str] | None:
    """The collections the caller's runs may search (None: all)."""
    return await collections_for(caller, db, "search")


async def claim_for_upload(caller: Caller, db: Database, name: str) -> None:
    """Let the caller upload into collection `name`: a new one becomes theirs
    (`collections.create` stamps it), an existing one must be theirs to change
    (`collections.update`): 403 if they may only read it, 404 if not even that."""
    created: dict[str, Any] = {"collection": name, "metadata": {}}
    await caller.authorize("collections", "create", created)
    metadata = created["metadata"] if isinstance(created["metadata"], dict) else {}
    access = await caller.authorize("collections", "update", {"collection": name})
    try:
        await collection_store.claim_collection(db, name, metadata=metadata, access=access)
    except NotFoundError:
        await refuse_if_readable(
            caller,
            "collections",
            {"collection": name},
            lambda read: collection_store.require_collection(db, name, read),
            what=f"collection {name!r}",
        )
        raise
