"""Every graph form langgraph-api accepts is served ready to run, with the server's
checkpointer and store; factories are called per acquire with what they ask for."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_config
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.store.memory import InMemoryStore
from langgraph_sdk.runtime import ServerRuntime

from server.config.graphs import Factory, GraphEntry, ProjectGraphs, graph_entry
from stores.errors import InvalidInputError


class CountState(TypedDict, total=False):
    count: int


async def bump(state: CountState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Count one, and note it in the store (so a test sees the store is attached)."""
    assert runtime.store is not None
    count = state.get("count", 0) + 1
    await runtime.store.aput(("seen",), str(count), {"count": count})
    return {"count": count}


def builder() -> StateGraph[CountState, Any, CountState, CountState]:
    graph = StateGraph(CountState)
    graph.add_node("bump", bump)
    graph.add_edge(START, "bump")
    return graph


Compiled = CompiledStateGraph[Any, Any, Any, Any]


def project_graphs(**objects: Any) -> tuple[ProjectGraphs, InMemorySaver, InMemoryStore]:
    saver, store = InMemorySaver(), InMemoryStore()
    entries = {gid: graph_entry(gid, f"./g.py:{gid}", None, obj) for gid, obj in objects.items()}
    return ProjectGraphs(entries, checkpointer=saver, store=store), saver, store


async def run_once(graphs: ProjectGraphs, graph_id: str, thread: str) -> dict[str, Any]:
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    async with graphs.acquire(graph_id, config) as graph:
        result: dict[str, Any] = await graph.ainvoke({"count": 0}, config)
        return result


async def assert_attached(
    graphs: ProjectGraphs, saver: InMemorySaver, store: InMemoryStore, graph_id: str
) -> None:
    assert await run_once(graphs, graph_id, f"t-{graph_id}") == {"count": 1}
    assert await saver.aget_tuple({"configurable": {"thread_id": f"t-{graph_id}"}}) is not None
    assert await store.aget(("seen",), "1") is not None


async def test_a_compiled_graph_is_copied_with_the_servers_checkpointer_and_store() -> None:
    compiled = builder().compile()
    graphs, saver, store = project_graphs(counted=compiled)
    await assert_attached(graphs, saver, store, "counted")
    assert compiled.checkpointer is None  # the project's object is left as it was
    async with graphs.acquire("counted") as first, graphs.acquire("counted") as second:
        assert first is second  # copied once, not per run
        assert first.name == "counted"  # an unnamed graph is named after its id


async def test_a_builder_is_compiled_with_the_servers_checkpointer_and_store() -> None:
    graphs, saver, store = project_graphs(built=builder())
    await assert_attached(graphs, saver, store, "built")


async def test_a_plain_factory_is_called_per_run() -> None:
    calls: list[int] = []

    def make() -> Compiled:
        calls.append(1)
        return builder().compile()

    graphs, saver, store = project_graphs(made=make)
    await assert_attached(graphs, saver, store, "made")
    await run_once(graphs, "made", "again")
    assert len(calls) == 2


async def test_a_factory_taking_config_gets_the_runs_config_and_can_read_it() -> None:
    seen: list[Any] = []

    def make(config: RunnableConfig) -> Compiled:
        seen.append((config["configurable"]["thread_id"], get_config()["configurable"]))
        config["configurable"]["mutated"] = True  # the caller's config is a copy
        return builder().compile()

    graphs, saver, store = project_graphs(configured=make)
    await assert_attached(graphs, saver, store, "configured")
    assert seen == [("t-configured", {"thread_id": "t-configured", "mutated": True})]


async def test_an_async_factory_taking_a_runtime_gets_the_access_context_store_and_context() -> (
    None
):
    seen: list[Any] = []

    async def make(runtime: ServerRuntime[Any]) -> Compiled:
        seen.append((runtime.access_context, runtime.store, getattr(runtime, "context", None)))
        return builder().compile()

    graphs, _, store = project_graphs(runtime_made=make)
    async with graphs.acquire("runtime_made", context={"user": "ada"}):
        pass
    async with graphs.acquire("runtime_made", access="threads.read"):
        pass
    assert seen == [
        ("threads.create_run", store, {"user": "ada"}),
        ("threads.read", store, None),
    ]


async def test_an_async_context_manager_factory_is_entered_per_run_and_exited_after() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def make(config: RunnableConfig, runtime: ServerRuntime[Any]) -> AsyncIterator[Compiled]:
        events.append(f"enter {runtime.access_context}")
        yield builder().compile()
        events.append("exit")

    graphs, saver, store = project_graphs(managed=make)
    async with graphs.acquire("managed") as graph:
        assert graph.checkpointer is saver
        assert events == ["enter threads.create_run"]
    assert events == ["enter threads.create_run", "exit"]
    await assert_attached(graphs, saver, store, "managed")


async def test_a_sync_context_manager_factory_returning_a_builder_is_compiled() -> None:
    @contextlib.contextmanager
    def make() -> Iterator[StateGraph[CountState, Any, CountState, CountState]]:
        yield builder()

    graphs, saver, store = project_graphs(sync_managed=make)
    await assert_attached(graphs, saver, store, "sync_managed")


def test_factories_that_take_what_no_server_gives_are_refused() -> None:
    def three(config: Any, runtime: ServerRuntime[Any], extra: Any) -> Compiled:
        raise AssertionError

    def two_configs(config: Any, other: Any) -> Compiled:
        raise AssertionError

    for bad in (three, two_configs):
        with pytest.raises(TypeError, match="takes the run's config, a ServerRuntime"):
            Factory.of(bad)
    with pytest.raises(TypeError, match="not a compiled graph, a StateGraph builder"):
        graph_entry("numbers", "./g.py:numbers", None, [1, 2])


async def test_a_factory_that_returns_no_graph_fails_its_run() -> None:
    graphs, _, _ = project_graphs(broken=lambda: "not a graph")
    with pytest.raises(TypeError, match="factory of graph 'broken' gave a str"):
        async with graphs.acquire("broken"):
            pass


async def test_an_undeclared_graph_names_the_field_and_the_declared_graphs() -> None:
    graphs, _, _ = project_graphs(counted=builder())
    with pytest.raises(InvalidInputError, match="declared graphs: \\['counted'\\]") as error:
        async with graphs.acquire("nope", field="assistant_id"):
            pass
    assert error.value.field == "assistant_id"


def test_system_assistants_are_named_as_langgraph_api_names_them() -> None:
    entries: dict[str, GraphEntry] = {
        "named": graph_entry("named", "./g.py:a", "Counts.", builder().compile(name="Counter")),
        "unnamed": graph_entry("unnamed", "./g.py:b", None, builder().compile()),
        "factory": graph_entry("factory", "./g.py:c", None, lambda: builder()),
    }
    graphs = ProjectGraphs(entries, checkpointer=None, store=None)
    shown = {(a.graph_id, a.name, a.description) for a in graphs.system_assistants()}
    assert shown == {
        ("named", "Counter", "Counts."),
        ("unnamed", "unnamed", None),
        ("factory", "factory", None),
    }
