"""Schemas of long-term memory: a user's memories and the Agent Server store API bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from langgraph.store.base import Item, SearchItem
from pydantic import BaseModel, Field, field_validator

from server.schemas.common import RequestModel
from stores.memory.operations import (
    MAX_KEY_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_NAMESPACE_LABELS,
    MAX_OFFSET,
    MAX_TTL_MINUTES,
    validate_namespace,
)

Label = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_LABEL_LENGTH,
        pattern=r"^[^.\x00]+$",
        description="A namespace label: no '.' (the separator) and no NUL.",
    ),
]
Namespace = Annotated[
    list[Label],
    Field(
        min_length=1,
        max_length=MAX_NAMESPACE_LABELS,
        description="Labels from the most general; the first may not be 'langgraph' (reserved).",
    ),
]
NamespacePrefix = Annotated[list[Label], Field(max_length=MAX_NAMESPACE_LABELS)]
ItemKey = Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH, pattern=r"^[^\x00]+$")]
"""An item's key: at most 512 characters, no NUL."""

MemoryKey = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[^\x00-\x1f]+$",
        description="The memory's key (no control characters).",
    ),
]


class MemoryOut(BaseModel):
    """One stored item: where it lives, its value, when it changed, and its search score."""

    namespace: list[str]
    key: str
    value: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    score: float | None = None

    @classmethod
    def of(cls, item: Item) -> MemoryOut:
        """Build from a LangGraph `Item` or `SearchItem`."""
        return cls(
            namespace=list(item.namespace),
            key=item.key,
            value=item.value,
            created_at=item.created_at,
            updated_at=item.updated_at,
            score=item.score if isinstance(item, SearchItem) else None,
        )


class MemoryPage(BaseModel):
    """A page of a user's memories: newest first, or ranked by meaning when `query` is set."""

    items: list[MemoryOut]
    total: int = Field(description="How many memories the user has.")
    limit: int
    offset: int
    query: str | None = None


class MemoryPut(RequestModel):
    """A memory to store for a user under `(user_id, "memories")`."""

    value: dict[str, Any] = Field(
        description='A JSON object. With "text" it is a fact (e.g. {"text": "I live in Porto"}; '
        '"subject", "attribute", "value", "negated", "exclusive" may state its structure).'
    )
    ttl_minutes: float | None = Field(
        None,
        gt=0,
        le=MAX_TTL_MINUTES,
        description="Forget it this many minutes after its last use.",
    )


class ForgetResult(BaseModel):
    """How many memories were deleted."""

    deleted: int


def _namespace(value: Any, field: str, *, allow_empty: bool) -> list[str]:
    return list(validate_namespace(value, field=field, allow_empty=allow_empty))


class StoreItemPut(RequestModel):
    """Body of `PUT /store/items` (Agent Server API)."""

    namespace: Namespace
    key: ItemKey
    value: dict[str, Any] = Field(
        description="A JSON object: integers within 64 bits, finite numbers, field names that "
        "do not start with '$', nested at most 16 deep, at most 64 KiB."
    )
    index: Literal[False] | list[str] | None = None
    ttl: float | None = Field(None, gt=0, le=MAX_TTL_MINUTES, description="Minutes to live.")

    @field_validator("namespace")
    @classmethod
    def _labels(cls, value: Any) -> list[str]:
        return _namespace(value, "namespace", allow_empty=False)


class StoreItemsSearch(RequestModel):
    """Body of `POST /store/items/search` (Agent Server API)."""

    namespace_prefix: NamespacePrefix = Field(default_factory=list)
    filter: dict[str, Any] | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    query: str | None = Field(None, max_length=2000)
    refresh_ttl: bool | None = None

    @field_validator("namespace_prefix")
    @classmethod
    def _labels(cls, value: Any) -> list[str]:
        return _namespace(value, "namespace_prefix", allow_empty=True)


class StoreNamespacesList(RequestModel):
    """Body of `POST /store/namespaces` (Agent Server API)."""

    prefix: NamespacePrefix | None = None
    suffix: NamespacePrefix | None = None
    max_depth: int | None = Field(None, ge=1, le=MAX_NAMESPACE_LABELS)
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
