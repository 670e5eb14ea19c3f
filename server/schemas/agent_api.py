"""Request bodies of the Agent Server API's assistants and threads routes (langgraph-sdk 0.4)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from server.schemas.common import PageOffset, StoredObject, StoredValue
from server.schemas.memory import ItemKey, Namespace
from stores.sql.assistants import AssistantSort
from stores.sql.threads import ThreadSort, ThreadStatus

# A century: longer TTLs are a typo (and would overflow PostgreSQL's interval arithmetic).
MAX_TTL_MINUTES = 100 * 366 * 24 * 60
SortOrder = Literal["asc", "desc"]
IfExists = Literal["raise", "do_nothing"]
AssistantField = Literal[
    "assistant_id",
    "graph_id",
    "name",
    "description",
    "config",
    "context",
    "created_at",
    "updated_at",
    "metadata",
    "version",
]
ThreadField = Literal[
    "thread_id",
    "created_at",
    "updated_at",
    "state_updated_at",
    "metadata",
    "config",
    "status",
    "values",
    "interrupts",
]
# `extract` of a thread search: alias → a dot/bracket path into one of these columns, as
# langgraph-api takes it (`values.messages[-1].content`); at most 10 paths.
MAX_EXTRACT_PATHS = 10
ExtractAlias = Annotated[
    str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=100)
]
ExtractPath = Annotated[
    str,
    StringConstraints(
        pattern=r"^(values|metadata|config|interrupts)([.\[][^\x00]*)?$", max_length=500
    ),
]


class AgentApiBody(BaseModel):
    """Base of Agent Server API bodies: fields newer clients add are ignored, as the server does."""

    model_config = ConfigDict(extra="ignore")


class AssistantCreate(AgentApiBody):
    """Body of `POST /assistants`."""

    graph_id: str = Field(min_length=1, max_length=100)
    assistant_id: uuid.UUID | None = None
    config: StoredObject = Field(default_factory=dict)
    context: StoredObject = Field(default_factory=dict)
    metadata: StoredObject = Field(default_factory=dict)
    if_exists: IfExists = "raise"
    name: str | None = Field(None, max_length=200)
    description: str | None = None


class AssistantUpdate(AgentApiBody):
    """Body of `PATCH /assistants/{id}`: every field optional; a new version is written."""

    graph_id: str | None = Field(None, min_length=1, max_length=100)
    config: StoredObject | None = None
    context: StoredObject | None = None
    metadata: StoredObject | None = None
    name: str | None = Field(None, max_length=200)
    description: str | None = None


class AssistantCount(AgentApiBody):
    """Body of `POST /assistants/count`."""

    metadata: StoredObject | None = None
    graph_id: str | None = None
    name: str | None = None


class AssistantSearch(AssistantCount):
    """Body of `POST /assistants/search`."""

    limit: int = Field(10, ge=1, le=1000)
    offset: PageOffset = 0
    sort_by: AssistantSort | None = None
    sort_order: SortOrder | None = None
    select: list[AssistantField] | None = None


class AssistantVersionsSearch(AgentApiBody):
    """Body of `POST /assistants/{id}/versions`."""

    metadata: StoredObject | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: PageOffset = 0


class AssistantSetLatest(AgentApiBody):
    """Body of `POST /assistants/{id}/latest`."""

    # The versions column is a 32-bit integer: a larger version cannot exist.
    version: int = Field(ge=1, le=2**31 - 1)


class StateUpdate(AgentApiBody):
    """One state update of a superstep (thread creation with `supersteps`)."""

    values: StoredValue = None
    command: StoredObject | None = None
    as_node: str = Field(
        min_length=1,
        description="The node the update is written as; one the thread's graph lacks is a 422.",
    )


class Superstep(AgentApiBody):
    """The updates applied together as one superstep."""

    updates: list[StateUpdate] = Field(min_length=1)


class ThreadTTLBody(AgentApiBody):
    """A thread's TTL as the SDK sends it: swept `ttl` minutes after the thread's last update."""

    strategy: Literal["delete"] = "delete"
    ttl: float = Field(gt=0, le=MAX_TTL_MINUTES, description="Minutes to live.")


class ThreadCreate(AgentApiBody):
    """Body of `POST /threads`."""

    thread_id: uuid.UUID | None = None
    metadata: StoredObject = Field(default_factory=dict)
    if_exists: IfExists = "raise"
    supersteps: list[Superstep] | None = None
    ttl: ThreadTTLBody | None = None


class ThreadUpdate(AgentApiBody):
    """Body of `PATCH /threads/{id}`: metadata merged into the thread's."""

    metadata: StoredObject = Field(default_factory=dict)
    ttl: ThreadTTLBody | None = None


class ThreadCount(AgentApiBody):
    """Body of `POST /threads/count`."""

    metadata: StoredObject | None = None
    values: StoredObject | None = None
    status: ThreadStatus | None = None


class ThreadSearch(ThreadCount):
    """Body of `POST /threads/search`."""

    ids: list[uuid.UUID] | None = Field(None, max_length=1000)
    limit: int = Field(10, ge=1, le=1000)
    offset: PageOffset = 0
    sort_by: ThreadSort | None = None
    sort_order: SortOrder | None = None
    select: list[ThreadField] | None = None
    extract: dict[ExtractAlias, ExtractPath] | None = Field(None, max_length=MAX_EXTRACT_PATHS)

    @field_validator("extract")
    @classmethod
    def _aliases_are_not_thread_fields(
        cls, extract: dict[str, str] | None
    ) -> dict[str, str] | None:
        reserved = sorted(set(extract or {}) & set(get_args(ThreadField)))
        if reserved:
            raise ValueError(f"extract keys cannot be thread fields: {reserved}")
        return extract


class ThreadPrune(AgentApiBody):
    """Body of `POST /threads/prune`."""

    thread_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)
    strategy: Literal["delete", "keep_latest"] = "delete"


class CheckpointRef(AgentApiBody):
    """A checkpoint of a thread, as the SDK sends it."""

    checkpoint_id: str | None = None
    checkpoint_ns: str = ""
    checkpoint_map: StoredObject | None = None
    thread_id: str | None = None


class ThreadStateAtCheckpoint(AgentApiBody):
    """Body of `POST /threads/{id}/state/checkpoint`."""

    checkpoint: CheckpointRef
    subgraphs: bool = False


class ThreadStateUpdate(AgentApiBody):
    """Body of `POST /threads/{id}/state`: `values` written as if by node `as_node`."""

    values: StoredValue = None
    as_node: str | None = Field(
        None,
        min_length=1,
        description="The node the update is written as; one the thread's graph lacks is a 422.",
    )
    checkpoint_id: str | None = None
    checkpoint: CheckpointRef | None = None


class ThreadHistory(AgentApiBody):
    """Body of `POST /threads/{id}/history`."""

    limit: int = Field(10, ge=1, le=1000)
    before: str | CheckpointRef | None = None
    metadata: StoredObject | None = None
    checkpoint: CheckpointRef | None = None

    @field_validator("before", mode="before")
    @classmethod
    def _before_as_a_config(cls, value: object) -> object:
        """The JS client sends `before` as a config (`{"configurable": {"checkpoint_id":
        ...}}`), as langgraph-api reads it; the Python client a checkpoint or its id."""
        if isinstance(value, dict) and isinstance(value.get("configurable"), dict):
            return value["configurable"]
        return value


class StoreItemDelete(AgentApiBody):
    """Body of `DELETE /store/items`."""

    namespace: Namespace
    key: ItemKey
