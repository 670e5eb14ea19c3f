"""The project's graphs, handed out ready to run: the one place a run (or a read) gets its graph.

A graph in langgraph.json is a compiled graph, a `StateGraph` builder, or a factory: a sync or
async function, or an async (or sync) context manager, taking the run's `config`, a
`langgraph_sdk.runtime.ServerRuntime`, both, or nothing, as langgraph-api accepts them. Compiled
graphs and builders get the server's checkpointer and store once; a factory is called on every
`acquire` (every run, every state read), and what it returns gets them then.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import typing
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from langgraph.store.base import BaseStore
from langgraph_sdk.runtime import ServerRuntime, _ExecutionRuntime, _ReadRuntime

from stores.errors import InvalidInputError
from stores.sql.assistants import SystemAssistant

log = logging.getLogger(__name__)

Graph = Pregel[Any, Any, Any, Any]
AccessContext = Literal["threads.create_run", "threads.update", "threads.read", "assistants.read"]

DEFAULT_GRAPH_NAME = "LangGraph"  # what LangGraph names a graph compiled without a name
_RUNTIME_TYPES: tuple[type, ...] = (_ExecutionRuntime, _ReadRuntime)
_HINT_NAMES: dict[str, Any] = {
    "ServerRuntime": ServerRuntime,
    "RunnableConfig": RunnableConfig,
}


def _is_runtime(annotation: Any) -> bool:
    """Whether a parameter annotation asks for the server runtime (`ServerRuntime[...]`)."""
    if annotation is inspect.Parameter.empty:
        return False
    if annotation is ServerRuntime:
        return True
    if isinstance(annotation, type):
        return issubclass(annotation, _RUNTIME_TYPES)
    origin = get_origin(annotation)
    if origin is ServerRuntime:
        return True
    args = get_args(annotation)
    return origin is not None and bool(args) and _is_runtime(args[0])  # Annotated[...]


@dataclass(frozen=True, slots=True)
class Factory:
    """A graph factory and the names of the parameters that get the config and the runtime."""

    function: Callable[..., Any]
    config_param: str | None
    runtime_param: str | None

    @classmethod
    def of(cls, function: Callable[..., Any]) -> Factory:
        """Classify `function` by its parameters; `TypeError` when it takes what no server gives.

        A parameter annotated `ServerRuntime` (or one of its forms) gets the runtime; the other
        gets the config. With two parameters exactly one must be the runtime.
        """
        params = list(inspect.signature(function).parameters.values())
        try:
            hints = typing.get_type_hints(function, localns=_HINT_NAMES)
        except Exception:  # unresolvable annotations: classify by the raw ones
            hints = {}
        runtime = [p.name for p in params if _is_runtime(hints.get(p.name, p.annotation))]
        others = [p.name for p in params if p.name not in runtime]
        if len(params) > 2 or len(runtime) > 1 or len(others) > 1:
            names = [p.name for p in params]
            raise TypeError(
                f"a graph factory takes the run's config, a ServerRuntime, both or nothing; "
                f"{getattr(function, '__name__', function)!s} takes {names}"
            )
        return cls(
            function=function,
            config_param=others[0] if others else None,
            runtime_param=runtime[0] if runtime else None,
        )

    def call(self, config: RunnableConfig, runtime: Any) -> Any:
        """Call the factory with what it asks for (by keyword, as langgraph-api does)."""
        kwargs: dict[str, Any] = {}
        if self.config_param is not None:
            kwargs[self.config_param] = config
        if self.runtime_param is not None:
            kwargs[self.runtime_param] = runtime
        return self.function(**kwargs)


@dataclass(frozen=True, slots=True)
class GraphEntry:
    """One graph of langgraph.json as loaded: a graph or builder (`value`) or a `factory`."""

    graph_id: str
    path: str
    description: str | None
    value: Graph | StateGraph[Any, Any, Any, Any] | None = None
    factory: Factory | None = None


def graph_entry(graph_id: str, path: str, description: str | None, obj: Any) -> GraphEntry:
    """What `path` named, classified; `TypeError` when it is no graph, builder or factory."""
    if isinstance(obj, Pregel | StateGraph):
        if isinstance(obj, Pregel) and (obj.checkpointer not in (None, False) or obj.store):
            log.warning(
                "graph %r (%s) was compiled with a checkpointer or store of its own; the "
                "server's PostgreSQL checkpointer and memory store replace them",
                graph_id,
                path,
            )
        return GraphEntry(graph_id, path, description, value=obj)
    if callable(obj):
        return GraphEntry(graph_id, path, description, factory=Factory.of(obj))
    raise TypeError(
        f"it is a {type(obj).__name__}, not a compiled graph, a StateGraph builder or a graph "
        "factory"
    )


@contextlib.asynccontextmanager
async def _entered(produced: Any) -> AsyncIterator[Any]:
    """What a factory produced, entered: an async or sync context manager, an awaitable, a value."""
    if hasattr(produced, "__aenter__") and hasattr(produced, "__aexit__"):
        async with produced as value:
            yield value
    elif hasattr(produced, "__enter__") and hasattr(produced, "__exit__"):
        with produced as value:
            yield value
    elif inspect.isawaitable(produced):
        yield await produced
    else:
        yield produced


class ProjectGraphs:
    """The declared graphs by id; `acquire` yields one ready to run, with checkpointer and store."""

    def __init__(
        self,
        entries: Mapping[str, GraphEntry],
        *,
        checkpointer: BaseCheckpointSaver[Any] | None,
        store: BaseStore | None,
    ) -> None:
        self._entries = dict(entries)
        self.checkpointer = checkpointer
        self.store = store
        self._ready: dict[str, Graph] = {
            graph_id: self._attach(graph_id, entry.value)
            for graph_id, entry in self._entries.items()
            if entry.value is not None
        }

    def __contains__(self, graph_id: object) -> bool:
        return graph_id in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def declared(self) -> list[str]:
        """The graph ids, sorted (for messages)."""
        return sorted(self._entries)

    def require(self, graph_id: str, *, field: str = "graph_id") -> None:
        """`InvalidInputError` naming `field` and the declared graphs unless `graph_id` is one."""
        if graph_id not in self._entries:
            raise InvalidInputError(
                f"graph {graph_id!r} is not declared in langgraph.json; declared graphs: "
                f"{self.declared()}",
                field=field,
            )

    def compiled(self) -> dict[str, Graph]:
        """The graphs compiled once at startup, by id (a factory's graph exists per run only)."""
        return dict(self._ready)

    def is_factory(self, graph_id: str) -> bool:
        """Whether the graph is made per run by a factory."""
        entry = self._entries.get(graph_id)
        return entry is not None and entry.factory is not None

    def system_assistants(self) -> list[SystemAssistant]:
        """One assistant per graph, named as langgraph-api names them (the graph's own name
        when it was compiled with one, else the graph id)."""
        assistants = []
        for graph_id, entry in self._entries.items():
            ready = self._ready.get(graph_id)
            name = ready.name if ready is not None and ready.name else graph_id
            assistants.append(SystemAssistant(graph_id, name, entry.description))
        return assistants

    def _attach(self, graph_id: str, value: Any) -> Graph:
        """`value` with the server's checkpointer and store (a builder is compiled with them)."""
        if isinstance(value, StateGraph):
            return value.compile(checkpointer=self.checkpointer, store=self.store, name=graph_id)
        if isinstance(value, Pregel):
            update: dict[str, Any] = {"checkpointer": self.checkpointer, "store": self.store}
            if value.name == DEFAULT_GRAPH_NAME:
                update["name"] = graph_id
            return value.copy(update=update)
        raise TypeError(
            f"the factory of graph {graph_id!r} gave a {type(value).__name__}, not a graph"
        )

    def _runtime(self, access: AccessContext, context: Any, user: Any) -> Any:
        if access == "threads.create_run":
            return _ExecutionRuntime(
                access_context=access,
                user=user,
                store=self.store,  # type: ignore[arg-type]
                context=copy.copy(context),
            )
        return _ReadRuntime(access_context=access, user=user, store=self.store)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def acquire(
        self,
        graph_id: str,
        config: Mapping[str, Any] | None = None,
        *,
        access: AccessContext = "threads.create_run",
        context: Any = None,
        user: Any = None,
        field: str = "graph_id",
    ) -> AsyncIterator[Graph]:
        """The graph `graph_id`, ready to run, for as long as the block lasts.

        A factory is called with a copy of `config` (and a `ServerRuntime` whose
        `access_context` is `access`, whose `user` is `user` (the caller, or the run's creator),
        carrying `context` when the graph is acquired to run); a context manager it returns is
        exited when the block ends.

        Raises:
            InvalidInputError: the graph is not declared (naming `field`).
        """
        self.require(graph_id, field=field)
        ready = self._ready.get(graph_id)
        if ready is not None:
            yield ready
            return
        factory = self._entries[graph_id].factory
        assert factory is not None
        factory_config = copy.deepcopy(dict(config or {}))
        factory_config["configurable"] = dict(factory_config.get("configurable") or {})
        runnable_config = typing.cast(RunnableConfig, factory_config)
        async with contextlib.AsyncExitStack() as stack:
            # `langgraph.config.get_config()` works inside the factory, as under langgraph-api.
            token = var_child_runnable_config.set(runnable_config)
            try:
                produced = factory.call(runnable_config, self._runtime(access, context, user))
                value = await stack.enter_async_context(_entered(produced))
            finally:
                var_child_runnable_config.reset(token)
            yield self._attach(graph_id, value)
