"""stream_graph: every Agent Server stream mode, from the chat graph and a graph with a subgraph."""

from __future__ import annotations

import json
import operator
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command, Interrupt, Send, interrupt

from graphs.chat import build_chat_graph
from nodes.context import AgentContext
from server.runs.streaming import dumps, stream_graph, to_jsonable, validate_stream_modes
from stores.checkpoints import open_checkpoints

QUESTION = {"messages": [{"role": "user", "content": "What is 6 * 7?"}]}
Events = list[tuple[str, Any]]


@pytest.fixture
async def saver(database_url: str) -> AsyncIterator[AsyncPostgresSaver]:
    """The server's PostgreSQL checkpointer on this module's database."""
    async with open_checkpoints(database_url, max_size=2) as checkpoints:
        yield await checkpoints.ready()


@pytest.fixture
def chat(saver: AsyncPostgresSaver) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The chat graph with the PostgreSQL checkpointer (offline model, no knowledge base)."""
    return build_chat_graph(checkpointer=saver, store=InMemoryStore())


CONTEXT = AgentContext(tools=("calculator",))


async def collect(graph: Any, modes: list[str], **options: Any) -> Events:
    """Every (event, data) of one run of `graph` on a fresh thread; data must be JSON."""
    config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
    events: Events = []
    async for name, data in stream_graph(
        graph,
        options.pop("input", QUESTION),
        config=config,
        context=options.pop("context", CONTEXT),
        stream_modes=modes,
        **options,
    ):
        assert json.loads(json.dumps(data)) == data  # plain JSON, nothing left to encode
        events.append((name, data))
    return events


def of(events: Events, name: str) -> list[Any]:
    return [data for event, data in events if event == name]


async def test_values_mode_sends_the_whole_state_after_each_step(chat: Any) -> None:
    events = await collect(chat, ["values"])
    assert {name for name, _ in events} == {"values"}
    values = of(events, "values")
    assert values[0]["messages"][0]["type"] == "human"
    assert "42" in values[-1]["answer"]
    assert values[-1]["messages"][-1]["type"] == "ai"


async def test_updates_mode_sends_each_nodes_changes_by_node_name(chat: Any) -> None:
    updates = of(await collect(chat, ["updates"]), "updates")
    nodes = [next(iter(update)) for update in updates]
    assert sorted(nodes[:2]) == ["recall", "retrieve"]  # one step, side by side
    assert nodes[2] == "plan"
    assert "call_tools" in nodes
    assert "respond" in nodes
    respond = next(u["respond"] for u in updates if "respond" in u)
    assert "42" in respond["answer"]


async def test_messages_tuple_is_sent_as_messages_with_chunk_and_metadata(chat: Any) -> None:
    events = await collect(chat, ["messages-tuple"])
    assert {name for name, _ in events} == {"messages"}
    pairs = of(events, "messages")
    assert all(isinstance(p, list) and len(p) == 2 for p in pairs)
    streamed = [(m, meta) for m, meta in pairs if meta["langgraph_node"] == "respond"]
    assert len(streamed) > 3  # token by token
    assert all(m["type"] == "AIMessageChunk" for m, _ in streamed)
    assert len({m["id"] for m, _ in streamed}) == 1
    answer = "".join(m["content"] for m, _ in streamed)
    final = of(await collect(chat, ["values"]), "values")[-1]["answer"]
    assert answer == final


async def test_legacy_messages_mode_sends_metadata_then_accumulated_partials(chat: Any) -> None:
    events = await collect(chat, ["messages"])
    names = {name for name, _ in events}
    assert names <= {"messages/metadata", "messages/partial", "messages/complete"}
    first_seen: dict[str, int] = {}
    for index, (name, data) in enumerate(events):
        if name == "messages/metadata":
            (message_id,) = data
            first_seen[message_id] = index
            assert data[message_id]["metadata"]["langgraph_node"]
        else:
            (message,) = data
            assert first_seen[message["id"]] < index  # metadata comes before the message
    partials = of(events, "messages/partial")
    lengths = [len(p[0]["content"]) for p in partials if p[0]["id"] == partials[-1][0]["id"]]
    assert lengths == sorted(lengths)  # accumulated: each partial holds the text so far
    assert lengths[0] < lengths[-1]
    assert partials[-1][0]["type"] == "ai"  # a message, not a chunk
    assert "42" in partials[-1][0]["content"]
    # The plan's tool call comes as one whole message, not streamed.
    complete = of(events, "messages/complete")
    assert any(m[0]["tool_calls"] for m in complete)


async def test_custom_mode_sends_what_nodes_write(chat: Any) -> None:
    custom = of(await collect(chat, ["custom"]), "custom")
    results = [e["data"] for e in custom if e["event"] == "tool_result"]
    assert results[0]["name"] == "calculator"
    assert results[0]["content"] == "42"
    assert any(e["event"] == "token" for e in custom)


async def test_debug_mode_sends_checkpoints_with_their_ids_and_tasks(chat: Any) -> None:
    debug = of(await collect(chat, ["debug"]), "debug")
    kinds = {d["type"] for d in debug}
    assert {"checkpoint", "task", "task_result"} <= kinds
    checkpoint = next(d["payload"] for d in debug if d["type"] == "checkpoint")
    assert checkpoint["checkpoint"]["checkpoint_id"]
    assert checkpoint["checkpoint"]["thread_id"]
    assert "parent_checkpoint" in checkpoint
    later = [d["payload"] for d in debug if d["type"] == "checkpoint"][-1]
    assert later["parent_checkpoint"]["checkpoint_id"]


async def test_checkpoints_mode_sends_each_saved_checkpoint_like_get_state(chat: Any) -> None:
    checkpoints = of(await collect(chat, ["checkpoints"]), "checkpoints")
    assert len(checkpoints) > 3
    for checkpoint in checkpoints:
        assert {"config", "metadata", "values", "next", "tasks"} <= set(checkpoint)
    assert checkpoints[-1]["next"] == []
    assert "42" in checkpoints[-1]["values"]["answer"]


async def test_tasks_mode_sends_each_node_start_and_result(chat: Any) -> None:
    tasks = of(await collect(chat, ["tasks"]), "tasks")
    started = [t["name"] for t in tasks if "input" in t]
    finished = [t["name"] for t in tasks if "result" in t]
    assert sorted(started) == sorted(finished)  # recall and retrieve end in either order
    assert "respond" in started


async def test_events_mode_sends_langchain_events_and_no_raw_stream_chunks(chat: Any) -> None:
    events = await collect(chat, ["events", "values"])
    kinds = [e["event"] for e in of(events, "events")]
    assert kinds[0] == "on_chain_start"
    assert "on_chat_model_stream" in kinds
    roots = [
        e for e in of(events, "events") if e["event"] == "on_chain_stream" and not e["parent_ids"]
    ]
    assert roots == []  # the root's stream chunks become the requested modes instead
    assert "42" in of(events, "values")[-1]["answer"]


async def test_several_modes_interleave_in_one_stream(chat: Any) -> None:
    events = await collect(chat, ["values", "updates", "custom"])
    names = [name for name, _ in events]
    assert set(names) == {"values", "updates", "custom"}
    assert names.index("updates") < len(names) - 1


class Inner(TypedDict):
    """State of the subgraph."""

    steps: Annotated[list[str], operator.add]


def _child_graph() -> Any:
    inner = StateGraph(Inner)
    inner.add_node("first", lambda s: {"steps": ["first"]})
    inner.add_node("second", lambda s: {"steps": ["second"]})
    inner.add_edge(START, "first")
    inner.add_edge("first", "second")
    inner.add_edge("second", END)
    return inner.compile()


def _parent_graph(saver: AsyncPostgresSaver) -> Any:
    outer = StateGraph(Inner)
    outer.add_node("start", lambda s: {"steps": ["start"]})
    outer.add_node("child", _child_graph())
    outer.add_edge(START, "start")
    outer.add_edge("start", "child")
    outer.add_edge("child", END)
    return outer.compile(checkpointer=saver)


async def test_subgraph_events_are_named_mode_and_namespace(saver: AsyncPostgresSaver) -> None:
    graph = _parent_graph(saver)
    events = await collect(
        graph, ["values", "updates"], input={"steps": []}, context=None, subgraphs=True
    )
    names = [name for name, _ in events]
    nested = [n for n in names if "|" in n]
    assert nested, names
    assert all(n.split("|")[1].startswith("child:") for n in nested)
    assert {n.split("|")[0] for n in nested} == {"values", "updates"}
    child_updates = [d for n, d in events if n.startswith("updates|")]
    assert [next(iter(u)) for u in child_updates] == ["first", "second"]
    assert of(events, "values")[-1]["steps"][-2:] == ["first", "second"]


async def test_events_mode_with_subgraphs_keeps_the_namespaced_modes(
    saver: AsyncPostgresSaver,
) -> None:
    events = await collect(
        _parent_graph(saver), ["events", "updates"], input={"steps": []}, context=None,
        subgraphs=True,
    )  # fmt: skip
    names = {name for name, _ in events}
    assert "events" in names
    assert "updates" in names
    assert any(name.startswith("updates|child:") for name in names)
    started = {e["name"] for e in of(events, "events") if e["event"] == "on_chain_start"}
    assert {"start", "first", "second"} <= started


async def test_without_subgraphs_only_the_parents_events_are_sent(
    saver: AsyncPostgresSaver,
) -> None:
    events = await collect(
        _parent_graph(saver), ["values", "updates"], input={"steps": []}, context=None
    )
    assert all("|" not in name for name, _ in events)
    assert [next(iter(u)) for u in of(events, "updates")] == ["start", "child"]


class Approval(TypedDict):
    """State of the approval graph."""

    request: str
    decision: str


async def _ask(state: Approval) -> dict[str, Any]:
    return {"decision": interrupt({"question": f"approve {state['request']}?"})}


async def test_an_interrupt_is_sent_in_values_and_updates(saver: AsyncPostgresSaver) -> None:
    builder = StateGraph(Approval)
    builder.add_node("ask", _ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    graph = builder.compile(checkpointer=saver)
    events = await collect(graph, ["values", "updates"], input={"request": "leave"}, context=None)
    interrupts = [d["__interrupt__"] for n, d in events if "__interrupt__" in d]
    assert interrupts
    for found in interrupts:
        assert found[0]["value"] == {"question": "approve leave?"}
        assert found[0]["id"]


async def test_interrupt_before_stops_the_run_before_that_node(chat: Any) -> None:
    updates = of(await collect(chat, ["updates"], interrupt_before=["respond"]), "updates")
    nodes = [next(iter(u)) for u in updates]
    assert "respond" not in nodes
    assert nodes[-1] == "__interrupt__"


async def test_durability_exit_saves_only_the_final_checkpoint(
    chat: Any, saver: AsyncPostgresSaver
) -> None:
    saved: dict[str, int] = {}
    for durability in ("sync", "exit"):
        thread = str(uuid.uuid4())
        config: Any = {"configurable": {"thread_id": thread}}
        async for _ in stream_graph(
            chat, QUESTION, config=config, context=CONTEXT, durability=durability
        ):
            pass
        saved[durability] = len([c async for c in saver.alist(config)])
    assert saved["exit"] == 1
    assert saved["sync"] > 3


async def test_a_failing_node_raises_out_of_the_stream(saver: AsyncPostgresSaver) -> None:
    def fail(state: Approval) -> dict[str, Any]:
        raise ValueError("no approver on duty")

    builder = StateGraph(Approval)
    builder.add_node("fail", fail)
    builder.add_edge(START, "fail")
    graph = builder.compile(checkpointer=saver)
    with pytest.raises(ValueError, match="no approver on duty"):
        await collect(graph, ["values"], input={"request": "x"}, context=None)


def test_unknown_stream_modes_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'everything'"):
        validate_stream_modes(["values", "everything"])
    assert validate_stream_modes(None) == ["values"]
    assert validate_stream_modes("updates") == ["updates"]
    assert validate_stream_modes(["values", "values"]) == ["values"]


def test_langgraph_objects_are_serialised_like_langgraph_api() -> None:
    message = AIMessage("hi", id="m1")
    data = to_jsonable(
        {
            "send": Send("node", {"x": 1}),
            "interrupt": Interrupt(value="ok?", id="i1"),
            "command": Command(resume="yes"),
            "messages": (HumanMessage("q", id="h1"), message),
            "id": uuid.UUID(int=1),
            "nul": "a\x00b",
        }
    )
    assert data["send"] == {"node": "node", "args": {"x": 1}}
    assert (data["interrupt"]["value"], data["interrupt"]["id"]) == ("ok?", "i1")
    assert data["command"]["resume"] == "yes"
    assert [m["type"] for m in data["messages"]] == ["human", "ai"]
    assert data["id"] == "00000000-0000-0000-0000-000000000001"
    assert data["nul"] == "a\ufffdb"
    assert b"\\u0000" not in dumps({"k\x00": "v"})
