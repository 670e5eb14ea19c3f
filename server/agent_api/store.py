"""Agent Server API `/store`: put, get, delete and search items, list namespaces (memory store)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from server.auth.access import store_search_filter
from server.auth.caller import CallerDep
from server.deps import ResourcesDep
from server.schemas.agent_api import StoreItemDelete
from server.schemas.memory import (
    MemoryOut,
    StoreItemPut,
    StoreItemsSearch,
    StoreNamespacesList,
)
from stores.errors import NotFoundError
from stores.memory import operations as ops
from stores.memory.operations import MAX_KEY_LENGTH, MAX_LABEL_LENGTH, MAX_NAMESPACE_LABELS

router = APIRouter(prefix="/store", tags=["store"])

_LABEL = rf"[^.\x00]{{1,{MAX_LABEL_LENGTH}}}"
# A namespace as a query string: what `validate_namespace` accepts, said as a pattern.
DOTTED_NAMESPACE = rf"^{_LABEL}(\.{_LABEL}){{0,{MAX_NAMESPACE_LABELS - 1}}}$"


@router.put("/items", status_code=status.HTTP_204_NO_CONTENT)
async def put_item(body: StoreItemPut, resources: ResourcesDep, caller: CallerDep) -> None:
    """Create or replace the item at (namespace, key)."""
    value: dict[str, Any] = {
        "namespace": tuple(body.namespace),
        "key": body.key,
        "value": body.value,
        "index": body.index,
    }
    await caller.authorize("store", "put", value)
    await ops.put_item(
        resources.memory,
        list(value["namespace"]),
        value["key"],
        value["value"],
        index=value["index"],
        ttl=body.ttl,
    )


@router.get("/items")
async def get_item(
    resources: ResourcesDep,
    caller: CallerDep,
    key: Annotated[str, Query(min_length=1, max_length=MAX_KEY_LENGTH, pattern=r"^[^\x00]+$")],
    namespace: Annotated[
        str,
        Query(
            max_length=MAX_NAMESPACE_LABELS * (MAX_LABEL_LENGTH + 1) - 1,
            pattern=DOTTED_NAMESPACE,
            description=f"Labels joined with '.': 1 to {MAX_NAMESPACE_LABELS} labels of 1 to "
            f"{MAX_LABEL_LENGTH} characters, without NUL; the first not 'langgraph' (reserved).",
        ),
    ],
    refresh_ttl: bool | None = None,
) -> dict[str, Any] | None:
    """The item at (namespace, key); `null` when absent or expired, as langgraph-api answers
    (the SDK's `get_item` then returns None)."""
    value: dict[str, Any] = {
        "namespace": tuple(namespace.split(".") if namespace else ()),
        "key": key,
    }
    await caller.authorize("store", "get", value)
    try:
        item = await ops.get_item(
            resources.memory, list(value["namespace"]), value["key"], refresh_ttl=refresh_ttl
        )
    except NotFoundError:
        return None
    out = MemoryOut.of(item).model_dump(mode="json", exclude={"score"})
    return out


@router.delete("/items", status_code=status.HTTP_204_NO_CONTENT)
async def delete_item(body: StoreItemDelete, resources: ResourcesDep, caller: CallerDep) -> None:
    """Delete the item at (namespace, key) (absent items are fine)."""
    value: dict[str, Any] = {"namespace": tuple(body.namespace), "key": body.key}
    await caller.authorize("store", "delete", value)
    await ops.delete_item(resources.memory, list(value["namespace"]), value["key"])


@router.post("/items/search")
async def search_items(
    body: StoreItemsSearch, resources: ResourcesDep, caller: CallerDep
) -> dict[str, Any]:
    """Items under a namespace prefix, by filter and (with `query`) by meaning; the auth
    handler may narrow the prefix and add to the filter."""
    value: dict[str, Any] = {
        "namespace": tuple(body.namespace_prefix),
        "filter": body.filter,
        "limit": body.limit,
        "offset": body.offset,
        "query": body.query,
    }
    granted = await caller.authorize("store", "search", value)
    search_filter, possible = store_search_filter(value["filter"], granted)
    if not possible:
        return {"items": []}
    items = await ops.search_items(
        resources.memory,
        list(value["namespace"]),
        filter=search_filter,
        query=value["query"],
        limit=value["limit"],
        offset=value["offset"],
        refresh_ttl=body.refresh_ttl,
    )
    return {"items": [MemoryOut.of(item).model_dump(mode="json") for item in items]}


@router.post("/namespaces")
async def list_namespaces(
    body: StoreNamespacesList, resources: ResourcesDep, caller: CallerDep
) -> dict[str, Any]:
    """Namespaces matching a prefix and suffix (`*` matches any label), up to `max_depth`; the
    auth handler may narrow the prefix."""
    value: dict[str, Any] = {
        "namespace": tuple(body.prefix) if body.prefix else None,
        "suffix": tuple(body.suffix) if body.suffix else None,
        "max_depth": body.max_depth,
        "limit": body.limit,
        "offset": body.offset,
    }
    await caller.authorize("store", "list_namespaces", value)
    prefix, suffix = value["namespace"], value["suffix"]
    namespaces = await ops.list_namespaces(
        resources.memory,
        prefix=list(prefix) if prefix else None,
        suffix=list(suffix) if suffix else None,
        max_depth=value["max_depth"],
        limit=value["limit"],
        offset=value["offset"],
    )
    return {"namespaces": [list(ns) for ns in namespaces]}
