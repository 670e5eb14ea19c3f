"""The one agent-context model: an agent's row and config, then the assistant's and the run's
`context`, over the server's settings and limits; every run gets its `AgentContext` here."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nodes.context import (
    AgentContext,
    ChatModelSource,
    ComputeRunner,
    KnowledgeSearch,
    ModelSpec,
    SearchHitLike,
    ToolCache,
)
from nodes.tools.registry import enabled_tools
from server.settings import Settings
from stores.errors import ConflictError, InvalidInputError
from stores.sql.models import Agent


class ContextOverrides(BaseModel):
    """The keys of an agent's `config`, an assistant's or a run's `context` that change its
    `AgentContext`; unset ones keep the value below them. Other keys are ignored (graphs with
    another context schema, and LangGraph's own config keys, may use them)."""

    model_config = ConfigDict(extra="ignore")

    agent_name: str | None = Field(None, min_length=1, max_length=200)
    system_prompt: str | None = Field(None, max_length=100_000)
    tools: list[str] | None = Field(None, max_length=50)
    collections: list[str] | None = Field(None, max_length=50)
    max_steps: int | None = Field(None, ge=1, le=50)
    history_window: int | None = Field(None, ge=2, le=200)
    retrieve_k: int | None = Field(None, ge=0, le=20)
    min_score: float | None = Field(None, ge=-1, le=1)
    memory_policy: Literal["auto", "tool", "off"] | None = None
    memory_extractor: Literal["auto", "offline", "model"] | None = None
    tool_timeout_s: float | None = Field(None, gt=0, le=300)

    @field_validator("tools")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            enabled_tools(value)  # raises ValueError naming unknown tools
        return value


def check_overrides(layer: Mapping[str, Any] | None, *, field: str = "context") -> None:
    """Refuse a bad `context` where it enters: `InvalidInputError` (422) naming `field`."""
    _overrides(layer, field=field)


def _problems(error: ValidationError, field: str) -> str:
    """Each of `error`'s problems as `field.key: what is wrong` (pydantic's words, without
    its model's name and links)."""
    problems = []
    for problem in error.errors(include_url=False, include_input=False):
        where = ".".join([field, *(str(part) for part in problem["loc"])])
        problems.append(f"{where}: {problem['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def _overrides(layer: Mapping[str, Any] | None, *, field: str, whose: str = "") -> dict[str, Any]:
    """`layer`'s agent context keys; an `InvalidInputError` naming `field` and each bad key
    (after `whose`, the layer's owner) when one has a value Switchboard's graphs refuse."""
    if not layer:
        return {}
    try:
        values = ContextOverrides.model_validate(layer).model_dump(exclude_none=True)
    except ValidationError as error:
        raise InvalidInputError(f"{whose}{_problems(error, field)}", field=field) from error
    for key in ("tools", "collections"):
        if key in values:
            values[key] = tuple(values[key])
    return values


@dataclass(frozen=True, slots=True)
class ContextServices:
    """The service handles a run's nodes may use, opened by the lifespan."""

    knowledge: KnowledgeSearch | None = None
    tool_cache: ToolCache | None = None
    models: ChatModelSource | None = None
    compute: ComputeRunner | None = None


@dataclass(frozen=True, slots=True)
class ReadableKnowledge:
    """The knowledge base as a run's creator may read it: only the collections they may read,
    whatever the agent, its `context` or the model (a tool's `collection` argument) asks for."""

    knowledge: KnowledgeSearch
    readable: tuple[str, ...]

    async def search(
        self,
        query: str,
        *,
        k: int = 4,
        collections: Sequence[str] | None = None,
        source: str | None = None,
        doc_type: str | None = None,
        dedup: bool = False,
    ) -> Sequence[SearchHitLike]:
        """Search the asked collections the creator may read (all of those when None)."""
        wanted = self.readable if collections is None else tuple(
            name for name in collections if name in self.readable
        )  # fmt: skip
        if not wanted:
            return []
        return await self.knowledge.search(
            query, k=k, collections=list(wanted), source=source, doc_type=doc_type, dedup=dedup
        )


def model_spec(agent: Agent, settings: Settings) -> ModelSpec:
    """The agent's chat model: its row's `model` over the server's defaults."""
    model: Mapping[str, Any] = agent.model or {}
    provider = model.get("provider") or settings.llm_provider
    return ModelSpec(
        provider=provider,
        name=model.get("name") or (settings.llm_model if provider == "openai" else "offline"),
        temperature=float(model.get("temperature", settings.llm_temperature)),
        max_tokens=model.get("max_tokens", settings.llm_max_tokens),
        timeout_s=float(model.get("timeout_s", settings.llm_timeout_s)),
        max_retries=settings.llm_max_retries,
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        token_delay_s=settings.offline_token_delay_s,
    )


def agent_context(
    agent: Agent,
    *,
    user_id: str | uuid.UUID | None,
    settings: Settings,
    services: ContextServices,
    run_context: Mapping[str, Any] | None = None,
    disabled_tools: frozenset[str] = frozenset(),
    readable_collections: Sequence[str] | None = None,
) -> AgentContext:
    """The `AgentContext` of one run of `agent` for `user_id` (the run's creator: their
    memories; "anonymous" only on an open server for a conversation without a user).

    With `readable_collections` the run searches only those knowledge collections (the ones
    its creator may read).

    Layers, each over the one before: the server's settings; the agent's row (name, prompt,
    model, tools, collections); its `config`; the assistant's `context`; the run's `context`.
    Then the server's limits, whichever API started the run: tools switched off in the
    `tools` table are removed; tool time, output and model input caps come from the settings.
    A bad agent `config` is a `ConflictError` (409, `config`), a bad `context` an
    `InvalidInputError` (422, `context`).
    """
    knowledge = services.knowledge
    if knowledge is not None and readable_collections is not None:
        knowledge = ReadableKnowledge(knowledge, tuple(readable_collections))
    context = AgentContext(
        user_id=str(user_id) if user_id else "anonymous",
        agent_name=agent.name,
        system_prompt=agent.system_prompt,
        model=model_spec(agent, settings),
        tools=tuple(agent.tools),
        collections=tuple(agent.collections),
        max_steps=settings.agent_max_steps,
        history_window=settings.agent_history_window,
        tool_timeout_s=settings.agent_tool_timeout_s,
        memory_extractor=settings.memory_extractor,
        memory_limit=settings.memory_recall_k,
        memory_relative_score=settings.memory_recall_relative,
        memory_min_score=settings.memory_recall_min_score,
        memory_history_limit=settings.memory_history_limit,
        tool_max_output_chars=settings.tool_max_output_chars,
        max_input_chars=settings.llm_max_input_chars,
        http_allowed_hosts=tuple(settings.http_tool_allowed_hosts),
        http_allowed_ports=tuple(settings.outbound_allowed_ports),
        http_max_bytes=settings.http_tool_max_bytes,
        http_max_redirects=settings.http_tool_max_redirects,
        knowledge=knowledge,
        tool_cache=services.tool_cache,
        models=services.models,
        compute=services.compute,
    )
    try:
        configured = _overrides(agent.config, field="config")
    except InvalidInputError as error:
        raise ConflictError(
            f"agent {agent.id} has an invalid config: {error}", field="config"
        ) from error
    # As langgraph-api, an assistant's context is not checked against its graph when it is
    # created or changed: a value refused here fails each run of it, naming whose it is.
    assistant = _overrides(agent.context, field="context", whose=f"assistant {agent.id}: ")
    for layer in (configured, assistant):
        context = dataclasses.replace(context, **layer)
    context = dataclasses.replace(context, **_overrides(run_context, field="context"))
    if disabled_tools:
        tools = tuple(name for name in context.tools if name not in disabled_tools)
        context = dataclasses.replace(context, tools=tools)
    return context
