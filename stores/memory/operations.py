"""Memory operations the HTTP layer exposes: per-user memories and the Agent Server store API."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langgraph.store.base import Item, SearchItem

from stores.errors import InvalidInputError, NotFoundError
from stores.json_values import check_json
from stores.memory import facts
from stores.memory.facts import FACT_FIELDS, RECORD_FIELDS, USER, Fact
from stores.memory.filters import check_filter
from stores.memory.store import MongoStore, ValueLimits

MEMORIES = "memories"
MAX_KEY_LENGTH = 512
MAX_LABEL_LENGTH = 256
MAX_NAMESPACE_LABELS = 16
MAX_OFFSET = 1_000_000


def user_namespace(user_id: uuid.UUID) -> tuple[str]:
    """The root of everything remembered about a user: `(str(user_id),)`."""
    return (str(user_id),)


def user_memory_namespace(user_id: uuid.UUID, *sub: str) -> tuple[str, ...]:
    """Where the agent keeps a user's memories: `(str(user_id), "memories", *sub)`."""
    return (str(user_id), MEMORIES, *sub)


def validate_namespace(
    namespace: Any, *, field: str = "namespace", allow_empty: bool = False
) -> tuple[str, ...]:
    """Check a namespace from a request; raises `InvalidInputError` naming what is wrong.

    Labels are non-empty strings of at most 256 characters without `.` (the separator of the
    stored `ns_key`) or NUL; `*` is kept for match conditions only.
    """
    if not isinstance(namespace, (list, tuple)):
        raise InvalidInputError(f"{field} must be an array of strings", field=field)
    if not namespace and not allow_empty:
        raise InvalidInputError(f"{field} may not be empty", field=field)
    if len(namespace) > MAX_NAMESPACE_LABELS:
        raise InvalidInputError(f"{field} has more than {MAX_NAMESPACE_LABELS} labels", field=field)
    for label in namespace:
        if not isinstance(label, str):
            raise InvalidInputError(
                f"{field} labels must be strings, got {type(label).__name__}", field=field
            )
        if not label:
            raise InvalidInputError(f"{field} labels may not be empty", field=field)
        if "." in label or "\x00" in label:
            raise InvalidInputError(
                f"{field} label {label!r} may not contain '.' or NUL", field=field
            )
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidInputError(
                f"{field} labels are at most {MAX_LABEL_LENGTH} characters", field=field
            )
    if namespace and namespace[0] == "langgraph" and not allow_empty:
        raise InvalidInputError(f"{field} may not start with 'langgraph' (reserved)", field=field)
    return tuple(namespace)


def validate_key(key: Any, *, field: str = "key") -> str:
    """Check an item key: a non-empty string of at most 512 characters without NUL."""
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"{field} must be a non-empty string", field=field)
    if len(key) > MAX_KEY_LENGTH or "\x00" in key:
        raise InvalidInputError(
            f"{field} must be at most {MAX_KEY_LENGTH} characters without NUL", field=field
        )
    return key


def validate_value(
    value: Any, *, field: str = "value", limits: ValueLimits | None = None
) -> dict[str, Any]:
    """Check an item value: a JSON object within `limits` that MongoDB can store."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{field} must be a JSON object", field=field)
    limits = limits or ValueLimits()
    check_json(value, field=field, max_depth=limits.max_depth, max_bytes=limits.max_bytes)
    return dict(value)


MAX_TTL_MINUTES = 10 * 366 * 24 * 60
"""Ten years: a TTL is an integer of microseconds MongoDB must hold."""


def _validate_ttl(ttl: float | None, *, field: str = "ttl") -> float | None:
    if ttl is not None and not 0 < ttl <= MAX_TTL_MINUTES:
        raise InvalidInputError(
            f"{field} must be a positive number of minutes, at most {MAX_TTL_MINUTES}",
            field=field,
        )
    return ttl


def _validate_filter(filter: Any) -> dict[str, Any] | None:
    if filter is None:
        return None
    if not isinstance(filter, Mapping):
        raise InvalidInputError("filter must be a JSON object", field="filter")
    try:
        check_filter(filter)
    except ValueError as error:
        raise InvalidInputError(str(error), field="filter") from error
    limits = ValueLimits()
    check_json(
        filter,
        field="filter",
        max_depth=limits.max_depth,
        max_bytes=limits.max_bytes,
        operators=True,
    )
    return dict(filter)


# -- the Agent Server store API (/store/items, /store/items/search, /store/namespaces) ----------


async def put_item(
    store: MongoStore,
    namespace: Any,
    key: Any,
    value: Any,
    *,
    index: Literal[False] | list[str] | None = None,
    ttl: float | None = None,
) -> None:
    """`PUT /store/items`: create or replace an item (validated; 422 on bad input)."""
    ns = validate_namespace(namespace)
    checked = validate_value(value, limits=store.value_limits)
    await store.aput(ns, validate_key(key), checked, index=index, ttl=_validate_ttl(ttl))


async def get_item(
    store: MongoStore, namespace: Any, key: Any, *, refresh_ttl: bool | None = None
) -> Item:
    """`GET /store/items`: one item; `NotFoundError` when absent or expired."""
    ns = validate_namespace(namespace)
    item = await store.aget(ns, validate_key(key), refresh_ttl=refresh_ttl)
    if item is None:
        raise NotFoundError("item", f"{'.'.join(ns)}/{key}", field="key")
    return item


async def delete_item(store: MongoStore, namespace: Any, key: Any) -> None:
    """`DELETE /store/items`: delete an item (absent items are fine, as in LangGraph)."""
    await store.adelete(validate_namespace(namespace), validate_key(key))


async def search_items(
    store: MongoStore,
    namespace_prefix: Any,
    *,
    filter: Any = None,
    query: str | None = None,
    limit: int = 10,
    offset: int = 0,
    refresh_ttl: bool | None = None,
) -> list[SearchItem]:
    """`POST /store/items/search`: items under a prefix, by filter and (semantic) query."""
    prefix = validate_namespace(namespace_prefix, field="namespace_prefix", allow_empty=True)
    if not 0 < limit <= 1000:
        raise InvalidInputError("limit must be between 1 and 1000", field="limit")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInputError(f"offset must be between 0 and {MAX_OFFSET}", field="offset")
    return await store.asearch(
        prefix,
        query=query or None,
        filter=_validate_filter(filter),
        limit=limit,
        offset=offset,
        refresh_ttl=refresh_ttl,
    )


async def list_namespaces(
    store: MongoStore,
    *,
    prefix: Sequence[str] | None = None,
    suffix: Sequence[str] | None = None,
    max_depth: int | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[tuple[str, ...]]:
    """`POST /store/namespaces`: namespaces matching a prefix/suffix (`*` is a wildcard)."""
    if max_depth is not None and max_depth < 1:
        raise InvalidInputError("max_depth must be at least 1", field="max_depth")
    if not 0 < limit <= 1000:
        raise InvalidInputError("limit must be between 1 and 1000", field="limit")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInputError(f"offset must be between 0 and {MAX_OFFSET}", field="offset")
    return await store.alist_namespaces(
        prefix=validate_namespace(prefix, field="prefix", allow_empty=True) if prefix else None,
        suffix=validate_namespace(suffix, field="suffix", allow_empty=True) if suffix else None,
        max_depth=max_depth,
        limit=limit,
        offset=offset,
    )


# -- per-user memories (/users/{id}/memories) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryPage:
    """One page of a user's memories; `total` counts all of them (live ones)."""

    items: list[SearchItem]
    total: int
    limit: int
    offset: int
    query: str | None


async def list_user_memories(
    store: MongoStore,
    user_id: uuid.UUID,
    *,
    query: str | None = None,
    limit: int = 20,
    offset: int = 0,
    namespace: Sequence[str] | None = None,
) -> MemoryPage:
    """A user's memories (everything under `namespace`, default `(user_id,)`): most recently
    updated first, or ranked by meaning for `query`."""
    root = tuple(namespace) if namespace is not None else user_namespace(user_id)
    items = await store.asearch(root, query=query or None, limit=limit, offset=offset)
    total = await store.acount(root)
    return MemoryPage(items=items, total=total, limit=limit, offset=offset, query=query or None)


StatementParser = Callable[[str], Fact | None]


def _fact_from(value: Mapping[str, Any], parse: StatementParser | None) -> Fact | None:
    """The fact a value sent by a user states: its own `subject`/`attribute`/`value` fields
    when given, else what `parse` reads in its `text`, else the text as a free note."""
    text = value.get("text")
    if not isinstance(text, str) or not text.strip():
        return None
    for name in RECORD_FIELDS:
        if name in value:
            raise InvalidInputError(f"value.{name} is kept by the server", field=f"value.{name}")
    for name in ("subject", "attribute", "value"):
        if name in value and not isinstance(value[name], str):
            raise InvalidInputError(f"value.{name} must be a string", field=f"value.{name}")
    for name in ("negated", "exclusive"):
        if name in value and not isinstance(value[name], bool):
            raise InvalidInputError(f"value.{name} must be true or false", field=f"value.{name}")
    parsed = parse(text) if parse is not None and "attribute" not in value else None
    base = parsed or Fact(subject=USER, attribute="note", value=text, text=text)
    return Fact(
        subject=str(value.get("subject") or base.subject),
        attribute=str(value.get("attribute") or base.attribute),
        value=str(value.get("value") or base.value),
        text=text,
        negated=bool(value.get("negated", base.negated)),
        exclusive=bool(value.get("exclusive", base.exclusive)),
    )


async def remember_for_user(
    store: MongoStore,
    user_id: uuid.UUID,
    key: Any,
    value: Any,
    *,
    ttl: float | None = None,
    parse: StatementParser | None = None,
    history_limit: int = 20,
    namespace: Sequence[str] | None = None,
) -> Item:
    """Store one memory of a user under `namespace` (default `(user_id, "memories")`);
    returns it.

    A value with a `text` is a fact stated by the user now: it replaces what `key` held (which
    moves to the memory's history) and supersedes the current fact of the same exclusive
    subject and attribute, exactly as a newer statement in a conversation would. A value
    without `text` is stored as given.
    """
    namespace = tuple(namespace) if namespace is not None else user_memory_namespace(user_id)
    key = validate_key(key)
    checked = validate_value(value, limits=store.value_limits)
    ttl = _validate_ttl(ttl, field="ttl_minutes")
    fact = _fact_from(checked, parse)
    if fact is None:
        await store.aput(namespace, key, checked, ttl=ttl)
    else:
        extra = {k: v for k, v in checked.items() if k not in FACT_FIELDS}
        await facts.correct(
            store,
            namespace,
            key,
            fact,
            facts.Source(origin="api"),
            extra=extra,
            ttl=ttl,
            history_limit=history_limit,
        )
    item = await store.aget(namespace, key, refresh_ttl=False)
    if item is None:  # only if it expired at once
        raise NotFoundError("memory", key, field="key")
    return item


async def forget_user_memory(
    store: MongoStore, user_id: uuid.UUID, key: Any, *, namespace: Sequence[str] | None = None
) -> int:
    """Delete the memories named `key` in every namespace of the user (under `namespace`,
    default `(user_id,)`), vectors too.

    Raises:
        NotFoundError: The user has no memory with that key.
    """
    root = tuple(namespace) if namespace is not None else user_namespace(user_id)
    deleted = await store.adelete_where(root, key=validate_key(key))
    if deleted == 0:
        raise NotFoundError("memory", key, field="key")
    return deleted


async def forget_user(
    store: MongoStore, user_id: uuid.UUID, *, namespace: Sequence[str] | None = None
) -> int:
    """Delete everything remembered about a user (every namespace under `namespace`, default
    the user id)."""
    root = tuple(namespace) if namespace is not None else user_namespace(user_id)
    return await store.adelete_where(root)
