"""The run context: one agent's configuration plus the service handles its nodes may use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

# The safe built-in tools (no network, no writes): what an agent graph runs with when nothing
# names its tools — `langgraph dev`'s default context, and the system assistants of graphs that
# call tools. `http_get`, `remember` and `forget` stay opt-in.
DEFAULT_TOOLS: tuple[str, ...] = ("knowledge_search", "calculator", "current_time")


class SearchHitLike(Protocol):
    """What the nodes read from a knowledge-base hit (`stores.knowledge.SearchHit`)."""

    @property
    def document_id(self) -> Any: ...
    @property
    def chunk_index(self) -> int: ...
    @property
    def collection(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def doc_type(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...


class KnowledgeSearch(Protocol):
    """The part of the knowledge base the agent uses (`stores.knowledge.KnowledgeBase`)."""

    async def search(
        self,
        query: str,
        *,
        k: int = 4,
        collections: Sequence[str] | None = None,
        source: str | None = None,
        doc_type: str | None = None,
        dedup: bool = False,
    ) -> Sequence[SearchHitLike]: ...


class ToolCache(Protocol):
    """Where results of cacheable tools are kept (MongoDB `tool_cache`)."""

    async def get(self, tool: str, args: Mapping[str, Any]) -> Any | None: ...

    async def put(
        self, tool: str, args: Mapping[str, Any], result: Any, *, ttl_seconds: float
    ) -> None: ...


class ComputeRunner(Protocol):
    """Runs a `compute` tool's function in a worker process (`nodes.tools.sandbox`)."""

    async def run(self, fn: str, args: Mapping[str, Any], *, timeout_s: float) -> str: ...


class ChatModelSource(Protocol):
    """Builds (and may cache) the chat model for a model configuration."""

    def get(self, spec: ModelSpec) -> BaseChatModel: ...


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which chat model to use and how; `provider` "offline" needs nothing else."""

    provider: Literal["offline", "openai"] = "offline"
    name: str = "offline"
    temperature: float = 0.0
    max_tokens: int | None = None
    timeout_s: float = 60.0
    max_retries: int = 2
    api_key: SecretStr | None = None  # never in a repr, a log line or an error
    base_url: str | None = None
    token_delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class AgentContext:
    """Everything a run of an agent graph needs besides its state.

    The server builds one per run from the agent's row and the settings; `langgraph dev`
    builds one from the run's `context` JSON (service handles then stay `None`, and the nodes
    say that the knowledge base is not available; `compute` tools then run in a thread).
    `max_input_chars` caps what one model call is given (`LLM_MAX_INPUT_CHARS`).
    """

    user_id: str = "anonymous"
    agent_name: str = "assistant"
    system_prompt: str = ""
    model: ModelSpec = field(default_factory=ModelSpec)
    tools: tuple[str, ...] = DEFAULT_TOOLS
    collections: tuple[str, ...] = ()
    max_steps: int = 4
    history_window: int = 12
    summary_max_chars: int = 2000
    retrieve_k: int = 4
    min_score: float = 0.2
    memory_limit: int = 3
    memory_relative_score: float = 0.85
    memory_min_score: float = 0.37
    memory_policy: Literal["auto", "tool", "off"] = "auto"
    memory_extractor: Literal["auto", "offline", "model"] = "auto"
    memory_history_limit: int = 20
    tool_timeout_s: float = 10.0
    tool_max_output_chars: int = 20_000
    tool_cache_ttl_s: float = 3600.0
    http_allowed_hosts: tuple[str, ...] = ()
    http_allowed_ports: tuple[int, ...] = (80, 443)
    http_max_bytes: int = 100_000
    http_max_redirects: int = 3
    max_input_chars: int = 100_000
    knowledge: KnowledgeSearch | None = None
    tool_cache: ToolCache | None = None
    compute: ComputeRunner | None = None
    models: ChatModelSource | None = None
    chat_model: BaseChatModel | None = None


def context_from(value: AgentContext | Mapping[str, Any] | None) -> AgentContext:
    """`value` as an `AgentContext` (a JSON mapping from `langgraph dev` is converted)."""
    if value is None:
        return AgentContext()
    if isinstance(value, AgentContext):
        if isinstance(value.model, Mapping):
            return context_from(
                {name: getattr(value, name) for name in AgentContext.__dataclass_fields__}
            )
        return value
    known = set(AgentContext.__dataclass_fields__)
    values: dict[str, Any] = {k: v for k, v in value.items() if k in known}
    if isinstance(values.get("model"), Mapping):
        model_known = set(ModelSpec.__dataclass_fields__)
        spec = {k: v for k, v in values["model"].items() if k in model_known}
        if isinstance(spec.get("api_key"), str):
            spec["api_key"] = SecretStr(spec["api_key"])
        values["model"] = ModelSpec(**spec)
    for name in ("tools", "collections", "http_allowed_hosts", "http_allowed_ports"):
        if name in values:
            values[name] = tuple(values[name])
    return AgentContext(**values)


def reads_agent_context(graph: Any) -> bool:
    """Whether a compiled graph's nodes read `AgentContext` (Switchboard's agent graphs); any
    other graph takes a run's `context` as given, as under langgraph-api."""
    schema = getattr(graph, "context_schema", None)
    return isinstance(schema, type) and issubclass(schema, AgentContext)


def default_tools(graph: Any) -> tuple[str, ...]:
    """The tools the system assistant of a compiled `graph` starts with.

    `DEFAULT_TOOLS` for a graph on `AgentContext` that has a `call_tools` node (one that can run
    tools at all); none for any other graph.
    """
    agent = reads_agent_context(graph)
    return DEFAULT_TOOLS if agent and "call_tools" in getattr(graph, "nodes", {}) else ()
