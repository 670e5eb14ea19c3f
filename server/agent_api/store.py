"""Agent Server API `/store`: put, get, delete and search items, list namespaces (memory store)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from server.deps import ResourcesDep
from server.schemas.agent_api import StoreItemDelete
from server.schemas.common import NOT_FOUND
from server.schemas.memory import (
    MemoryOut,
    StoreItemPut,
    StoreItemsSearch,
    StoreNamespacesList,
)
from stores.memory import operations as ops

router = APIRouter(prefix="/store", tags=["store"])


@router.put("/items", status_code=status.HTTP_204_NO_CONTENT)
async def put_item(body: StoreItemPut, resources: ResourcesDep) -> None:
    """Create or replace the item at (namespace, key)."""
    await ops.put_item(
        resources.memory, body.namespace, body.key, body.value, index=body.index, ttl=body.ttl
    )


@router.get("/items", responses={**NOT_FOUND})
async def get_item(
    resources: ResourcesDep,
    key: Annotated[str, Query(min_length=1)],
    namespace: Annotated[str, Query(description="Labels joined with '.'.")] = "",
    refresh_ttl: bool | None = None,
) -> dict[str, Any]:
    """The item at (namespace, key); 404 when absent or expired."""
    labels = namespace.split(".") if namespace else []
    item = await ops.get_item(resources.memory, labels, key, refresh_ttl=refresh_ttl)
    out = MemoryOut.of(item).model_dump(mode="json", exclude={"score"})
    return out


@router.delete("/items", status_code=status.HTTP_204_NO_CONTENT)
async def delete_item(body: StoreItemDelete, resources: ResourcesDep) -> None:
    """Delete the item at (namespace, key) (absent items are fine)."""
    await ops.delete_item(resources.memory, body.namespace, body.key)


@router.post("/items/search")
async def search_items(body: StoreItemsSearch, resources: ResourcesDep) -> dict[str, Any]:
    """Items under a namespace prefix, by filter and (with `query`) by meaning."""
    items = await ops.search_items(
        resources.memory,
        body.namespace_prefix,
        filter=body.filter,
        query=body.query,
        limit=body.limit,
        offset=body.offset,
        refresh_ttl=body.refresh_ttl,
    )
    return {"items": [MemoryOut.of(item).model_dump(mode="json") for item in items]}


@router.post("/namespaces")
async def list_namespaces(body: StoreNamespacesList, resources: ResourcesDep) -> dict[str, Any]:
    """Namespaces matching a prefix and suffix (`*` matches any label), up to `max_depth`."""
    namespaces = await ops.list_namespaces(
        resources.memory,
        prefix=body.prefix,
        suffix=body.suffix,
        max_depth=body.max_depth,
        limit=body.limit,
        offset=body.offset,
    )
    return {"namespaces": [list(ns) for ns in namespaces]}
