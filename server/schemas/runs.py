"""Request bodies of the Agent Server API's runs routes (langgraph-sdk `runs.*`)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from server.runs.streaming import validate_stream_modes
from server.schemas.agent_api import CheckpointRef
from server.schemas.common import StoredObject, StoredValue, WebhookUrl, storable
from server.schemas.crons import InterruptNodes, StreamModeName, interrupt_nodes
from stores.json_values import MAX_FIELD_NAME


class RunCommand(BaseModel):
    """A `Command` for the graph: resume an interrupt, update the state, go to nodes."""

    model_config = ConfigDict(extra="forbid")

    resume: StoredValue = None
    update: StoredObject | Annotated[list[Any], AfterValidator(storable)] | None = None
    goto: str | Annotated[list[Any], AfterValidator(storable)] | StoredObject | None = None


class RunCreate(BaseModel):
    """The body of a run creation (langgraph-sdk `runs.create` / `stream` / `wait`)."""

    model_config = ConfigDict(extra="ignore")

    assistant_id: str = Field(min_length=1, max_length=200)
    input: StoredValue = None
    command: RunCommand | None = None
    metadata: StoredObject | None = None
    config: StoredObject | None = None
    context: StoredObject | None = None
    checkpoint_id: str | None = Field(None, max_length=100)
    checkpoint: CheckpointRef | None = None
    checkpoint_during: bool | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    stream_mode: StreamModeName | list[StreamModeName] | None = None
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: InterruptNodes = interrupt_nodes("before")
    interrupt_after: InterruptNodes = interrupt_nodes("after")
    webhook: WebhookUrl | None = None
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_disconnect: Literal["cancel", "continue"] = "continue"
    on_completion: Literal["delete", "keep"] = "delete"
    after_seconds: float | None = Field(None, ge=0, le=86_400)
    feedback_keys: (
        list[Annotated[str, Field(min_length=1, max_length=MAX_FIELD_NAME, pattern=r"^[^\x00]+$")]]
        | None
    ) = Field(None, max_length=100, description="Accepted and ignored (no LangSmith here).")

    @field_validator("stream_mode")
    @classmethod
    def _modes(cls, value: str | list[str] | None) -> list[str]:
        return validate_stream_modes(value)


class BatchRunCreate(RunCreate):
    """One run of `POST /runs/batch`: on `thread_id` when given, else stateless."""

    thread_id: uuid.UUID | None = None


class RunsCancel(BaseModel):
    """The body of `POST /runs/cancel`: runs by id (on a thread), or every run of a status."""

    # The three forms the route takes, as langgraph-api's document says its two: `status`
    # alone (no thread, no run ids), or non-empty `run_ids`, or a `thread_id` (its runs in
    # flight, or the listed ones on it); anything else is a 422.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {
                    "required": ["status"],
                    "properties": {
                        "status": {"type": "string"},
                        "thread_id": {"type": "null"},
                        "run_ids": {"anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}]},
                    },
                },
                {
                    "required": ["run_ids"],
                    "properties": {
                        "run_ids": {"type": "array", "minItems": 1},
                        "status": {"type": "null"},
                    },
                },
                {
                    "required": ["thread_id"],
                    "properties": {"thread_id": {"type": "string"}, "status": {"type": "null"}},
                },
            ]
        },
    )

    thread_id: uuid.UUID | None = None
    run_ids: list[uuid.UUID] | None = Field(None, max_length=1000)
    status: Literal["pending", "running", "all"] | None = None


RunField = Literal[
    "run_id",
    "thread_id",
    "assistant_id",
    "created_at",
    "updated_at",
    "status",
    "metadata",
    "kwargs",
    "multitask_strategy",
    "cancel_reason",
]
