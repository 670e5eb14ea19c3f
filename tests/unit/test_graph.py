"""The agent graph with the offline model (or a fake one), in-memory checkpointer and store."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from graphs.chat import build_chat_graph
from graphs.researcher import build_researcher_graph
from nodes.context import AgentContext
from nodes.models import OfflineChatModel
from nodes.remember import window_changes
from nodes.tools.calculator import evaluate
from nodes.tools.registry import ToolError


@dataclass(frozen=True)
class Hit:
    """A knowledge-base hit as `stores.knowledge.SearchHit` has it."""

    document_id: str
    chunk_index: int
    collection: str
    source: str
    doc_type: str
    title: str
    text: str
    score: float


class FakeKnowledge:
    """A knowledge base of two passages, ranked by shared words (unit tests only)."""

    passages = (
        Hit("d1", 0, "kb", "handbook.md", "md", "Handbook",
            "Switchboard keeps checkpoints in PostgreSQL. Vectors live in Qdrant.", 0.7),
        Hit("d2", 0, "kb", "menu.md", "md", "Menu",
            "The canteen serves lentil soup on Mondays.", 0.5),
    )  # fmt: skip

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.queries: list[str] = []

    async def search(
        self,
        query: str,
        *,
        k: int = 4,
        collections: Sequence[str] | None = None,
        source: str | None = None,
        doc_type: str | None = None,
        dedup: bool = False,
    ) -> list[Hit]:
        self.queries.append(query)
        if self.fail:
            raise ConnectionError("qdrant is down")
        words = set(query.lower().split())
        return [h for h in self.passages if words & set(h.text.lower().replace(".", "").split())][
            :k
        ]


class LoopingModel(OfflineChatModel):
    """A fake model that asks for the calculator on every call while it has tools."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.model_copy(update={"tool_names": ("calculator",)})

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        from langchain_core.outputs import ChatGeneration, ChatResult

        if self.tool_names:
            call = {
                "name": "calculator",
                "args": {"expression": "1+1"},
                "id": uuid.uuid4().hex,
                "type": "tool_call",
            }
            return ChatResult(
                generations=[ChatGeneration(message=AIMessage("", tool_calls=[call]))]
            )
        return await super()._agenerate(messages, stop, run_manager, **kwargs)  # fmt: skip


async def run_turn(
    graph: Any, thread: str, text: str, ctx: AgentContext
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One turn; returns the final state and the custom events in order."""
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    async for mode, chunk in graph.astream(
        {"messages": [HumanMessage(text)]},
        {"configurable": {"thread_id": thread}},
        context=ctx,
        stream_mode=["custom", "values"],
    ):
        if mode == "custom":
            events.append(chunk)
        else:
            final = chunk
    return final, events


def saved(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (action, text) of each `memory_saved` event."""
    return [
        (e["data"]["action"], e["data"]["text"]) for e in events if e["event"] == "memory_saved"
    ]


@pytest.fixture
def ctx() -> AgentContext:
    return AgentContext(
        user_id=f"user-{uuid.uuid4().hex[:6]}",
        knowledge=FakeKnowledge(),
        tools=("calculator", "current_time", "remember", "forget", "knowledge_search", "http_get"),
    )


async def test_question_is_answered_from_knowledge_with_a_citation(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    final, events = await run_turn(graph, "t", "Where are checkpoints kept?", ctx)
    assert "[1]" in final["answer"]
    assert "PostgreSQL" in final["answer"]
    assert [c["source"] for c in final["citations"]] == ["handbook.md"]
    names = [e["event"] for e in events]
    assert names.index("sources") < names.index("plan") < names.index("token")


async def test_arithmetic_goes_through_the_calculator_tool(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    final, events = await run_turn(graph, "t", "What is 12 * (3 + 4)?", ctx)
    results = [e["data"] for e in events if e["event"] == "tool_result"]
    assert results[0]["name"] == "calculator"
    assert results[0]["content"] == "84"
    assert "84" in final["answer"]


async def test_memory_from_one_conversation_is_recalled_in_another(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    await run_turn(graph, "first", "Remember that I'm vegetarian", ctx)
    final, _ = await run_turn(graph, "second", "What should I cook for me tonight?", ctx)
    assert "vegetarian" in final["answer"]


async def test_other_users_memories_are_not_recalled(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    await run_turn(graph, "first", "Remember that I'm vegetarian", ctx)
    other = replace(ctx, user_id="someone-else")
    final, _ = await run_turn(graph, "second", "What do you know about me?", other)
    assert "vegetarian" not in final["answer"]


async def test_nothing_to_go_on_is_said_plainly(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    final, _ = await run_turn(graph, "t", "Who won the 1934 football world cup?", ctx)
    assert "don't have anything to go on" in final["answer"]
    assert final["citations"] == []


async def test_step_limit_ends_in_a_graceful_answer(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    looping = replace(ctx, chat_model=LoopingModel(), max_steps=2)
    final, events = await run_turn(graph, "t", "add one and one forever", looping)
    assert sum(e["event"] == "tool_result" for e in events) == 2
    assert any(e["event"] == "step_limit" for e in events)
    assert "step limit" in final["answer"]


async def test_multi_round_question_stops_at_the_step_limit(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    _final, events = await run_turn(graph, "t", "compute 2+3 then what time is it", ctx)
    assert [e["data"]["name"] for e in events if e["event"] == "tool_result"] == [
        "calculator",
        "current_time",
    ]
    limited, events = await run_turn(
        graph, "u", "compute 2+3 then what time is it", replace(ctx, max_steps=1)
    )
    assert [e["data"]["name"] for e in events if e["event"] == "tool_result"] == ["calculator"]
    assert "step limit" in limited["answer"]


async def test_failing_tool_becomes_a_message_the_model_sees(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    final, events = await run_turn(graph, "t", "What is 1/0?", ctx)
    result = next(e["data"] for e in events if e["event"] == "tool_result")
    assert result["status"] == "error"
    assert "division by zero" in result["content"]
    assert "failed" in final["answer"]


async def test_knowledge_outage_is_a_warning_not_a_failure(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    down = replace(ctx, knowledge=FakeKnowledge(fail=True))
    final, events = await run_turn(graph, "t", "Where are checkpoints kept?", down)
    assert any(e["event"] == "warning" for e in events)
    assert "could not consult the knowledge base" in final["answer"]


async def test_window_stays_bounded_and_older_turns_fold_into_summary(ctx: AgentContext) -> None:
    saver = InMemorySaver()
    graph = build_chat_graph(checkpointer=saver, store=InMemoryStore())
    small = replace(ctx, history_window=4)
    for i in range(6):
        final, _ = await run_turn(graph, "t", f"What is {i} + {i}?", small)
    state = await graph.aget_state({"configurable": {"thread_id": "t"}})
    assert len(state.values["messages"]) == 4
    assert "User: What is 0 + 0?" in state.values["summary"]
    assert final["turn"] == 6


async def test_conversation_continues_from_the_checkpoint_in_a_new_graph(ctx: AgentContext) -> None:
    saver, store = InMemorySaver(), InMemoryStore()
    await run_turn(build_chat_graph(checkpointer=saver, store=store), "t", "What is 2+2?", ctx)
    again = build_chat_graph(checkpointer=saver, store=store)
    final, _ = await run_turn(again, "t", "What did I ask before?", ctx)
    assert "What is 2+2?" in final["answer"]


async def test_researcher_always_searches_twice_and_cites(ctx: AgentContext) -> None:
    graph = build_researcher_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    final, events = await run_turn(graph, "t", "Where does Switchboard keep vectors?", ctx)
    assert isinstance(ctx.knowledge, FakeKnowledge)
    assert len(ctx.knowledge.queries) == 2
    assert "[1]" in final["answer"]
    assert any(e["event"] == "plan" for e in events)


def test_window_changes_keep_the_window_and_fold_the_rest_into_the_summary() -> None:
    messages = [HumanMessage("q1", id="h1"), AIMessage("a1", id="a1"), HumanMessage("q2", id="h2")]
    changes = window_changes(
        messages,  # type: ignore[arg-type]
        AIMessage("a2", id="a2"),
        window=2,
        summary="",
        max_chars=100,
    )
    assert [m.id for m in changes["messages"]] == ["h1", "a1", "a2"]  # two removals, the answer
    assert changes["summary"] == "User: q1\nAssistant: a1"
    assert changes["scratch"][0].id == "__remove_all__"


async def test_tool_traffic_stays_out_of_the_window(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    await run_turn(graph, "t", "What is 2+2?", ctx)
    state = await graph.aget_state({"configurable": {"thread_id": "t"}})
    assert [m.type for m in state.values["messages"]] == ["human", "ai"]
    assert state.values["scratch"] == []


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2+3*4", 14), ("(1+2)^3", 27), ("sqrt(16)", 4.0), ("-7 // 2", -4), ("10 % 4", 2)],
)
def test_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression", ["__import__('os')", "a+1", "2**100000", "[1,2]", "(lambda: 1)()", "1/0"]
)
def test_calculator_refuses_anything_else(expression: str) -> None:
    with pytest.raises(ToolError):
        evaluate(expression)


async def test_offline_model_streams_tokens() -> None:
    model: BaseChatModel = OfflineChatModel()
    chunks = [c async for c in model.astream([HumanMessage("hello")])]
    assert len([c for c in chunks if c.text]) > 3
    assert "".join(c.text for c in chunks).startswith("Hello!")


class BrokenStore(InMemoryStore):
    """A memory store whose server is down."""

    async def asearch(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("mongo is down")

    async def aput(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("mongo is down")


async def test_memory_outage_is_a_warning_and_the_turn_still_answers(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=BrokenStore())
    final, events = await run_turn(graph, "t", "I'm vegetarian. What is 2+2?", ctx)
    warnings = [e["data"]["node"] for e in events if e["event"] == "warning"]
    assert warnings == ["recall", "remember"]
    assert "2+2 = 4" in final["answer"]
    assert "long-term memory" in final["answer"]


async def test_statement_about_oneself_is_saved_when_policy_is_auto(ctx: AgentContext) -> None:
    store = InMemoryStore()
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=store)
    _, events = await run_turn(graph, "t", "I'm allergic to peanuts.", ctx)
    assert saved(events) == [("added", "I'm allergic to peanuts")]
    _, events = await run_turn(graph, "u", "I'm a night owl", replace(ctx, memory_policy="tool"))
    assert not any(e["event"] == "memory_saved" for e in events)


async def test_messages_mode_streams_only_the_answer_tokens_once(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    streamed: list[tuple[str, str]] = []
    part: Any
    async for part in graph.astream(
        {"messages": [HumanMessage("What is 2+2?")]},
        {"configurable": {"thread_id": "t"}},
        context=ctx,
        stream_mode="messages",
    ):
        chunk, meta = part
        streamed.append((meta["langgraph_node"], type(chunk).__name__))
    from_respond = [kind for node, kind in streamed if node == "respond"]
    assert set(from_respond) == {"AIMessageChunk"}  # no second, whole copy of the answer
    assert ("plan", "AIMessageChunk") not in streamed  # planning is not streamed as tokens


async def test_remember_request_is_kept_even_without_the_remember_tool(ctx: AgentContext) -> None:
    store = InMemoryStore()
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=store)
    no_tools = replace(ctx, tools=())
    _, events = await run_turn(graph, "t", "Please remember that I'm vegetarian.", no_tools)
    assert saved(events) == [("added", "I'm vegetarian")]
    final, _ = await run_turn(graph, "u", "What do you know about me?", no_tools)
    assert "vegetarian" in final["answer"]


class AnswerFails(OfflineChatModel):
    """A fake model that calls tools normally but fails while streaming its answer."""

    async def _astream(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the model went away")
        yield  # an async generator


async def test_turn_after_a_failed_one_starts_with_an_empty_scratch(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    with pytest.raises(RuntimeError, match="went away"):
        await run_turn(graph, "t", "What is 2+2?", replace(ctx, chat_model=AnswerFails()))
    state = await graph.aget_state({"configurable": {"thread_id": "t"}})
    assert state.values["scratch"]  # the failed turn's tool traffic is still there
    final, events = await run_turn(graph, "t", "Who won the 1934 world cup?", ctx)
    assert not any(e["event"] == "tool_call" for e in events)
    assert "don't have anything to go on" in final["answer"]
    state = await graph.aget_state({"configurable": {"thread_id": "t"}})
    assert state.values["scratch"] == []


async def test_remembering_begins_with_recall_and_remember_joins_it(ctx: AgentContext) -> None:
    from nodes import remember as remember_node

    store = InMemoryStore()
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=store)
    no_memory_tools = replace(ctx, tools=("calculator",))
    final, events = await run_turn(
        graph, "t", "I'm allergic to peanuts. What is 2+2?", no_memory_tools
    )
    state = await graph.aget_state({"configurable": {"thread_id": "t"}})
    token = state.values["memory_task"]
    assert token  # recall began it
    assert token not in remember_node._early  # remember joined it (before the turn ended)
    assert saved(events) == [("added", "I'm allergic to peanuts")]
    assert [e["event"] for e in events].index("memory_saved") > max(
        i for i, e in enumerate(events) if e["event"] == "token"
    )  # streamed after the answer, as before
    assert "2+2 = 4" in final["answer"]
    items = await store.asearch((no_memory_tools.user_id, "memories"))
    assert [item.value["text"] for item in items] == ["I'm allergic to peanuts"]


async def test_with_a_memory_tool_remember_does_the_work_itself(ctx: AgentContext) -> None:
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=InMemoryStore())
    _, events = await run_turn(graph, "t", "I'm allergic to peanuts.", ctx)  # has `remember`
    state = await graph.aget_state({"configurable": {"thread_id": "t"}})
    assert state.values["memory_task"] == ""
    assert saved(events) == [("added", "I'm allergic to peanuts")]


async def test_a_turn_resumed_without_its_early_remembering_still_saves_the_fact(
    ctx: AgentContext,
) -> None:
    """As when the process that began it died: the attempt that resumes the turn from its last
    checkpoint (after recall) finds no task and remembers in `remember`."""
    from nodes import remember as remember_node

    store = InMemoryStore()
    saver = InMemorySaver()
    graph = build_chat_graph(checkpointer=saver, store=store)
    no_memory_tools = replace(ctx, tools=("calculator",))
    config: Any = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke(
        {"messages": [HumanMessage("My dog's name is Biscuit.")]},
        config,
        context=no_memory_tools,
        interrupt_after=["plan"],
    )
    token = (await graph.aget_state(config)).values["memory_task"]
    _, task = remember_node._early.pop(token)  # the process is gone: so is its task
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    resumed = build_chat_graph(checkpointer=saver, store=store)
    final = await resumed.ainvoke(None, config, context=no_memory_tools)
    assert final["answer"]
    items = await store.asearch((no_memory_tools.user_id, "memories"))
    assert [item.value["text"] for item in items] == ["My dog's name is Biscuit"]


async def _nodes_of_turn(graph: Any, thread: str, text: str, ctx: AgentContext) -> list[str]:
    nodes: list[str] = []
    async for update in graph.astream(
        {"messages": [HumanMessage(text)]},
        {"configurable": {"thread_id": thread}},
        context=ctx,
        stream_mode="updates",
    ):
        nodes.extend(update)
    return nodes


async def test_a_turn_with_nothing_to_remember_ends_with_respond(ctx: AgentContext) -> None:
    """No tools, nothing said about oneself: `respond` closes the turn (the answer joins the
    window) and `remember` does not run; a fact, or a tool call, still goes through it."""
    from nodes import remember as remember_node

    store = InMemoryStore()
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=store)
    plain = replace(ctx, tools=("calculator",))
    config: Any = {"configurable": {"thread_id": "t"}}
    for turn, text in enumerate(["hello", "how are you?"], start=1):
        # The remembering `recall` began has ended (with nothing) before `respond` runs.
        await graph.ainvoke(
            {"messages": [HumanMessage(text)]}, config, context=plain, interrupt_after=["plan"]
        )
        token = (await graph.aget_state(config)).values["memory_task"]
        assert await remember_node._early[token][1] == ([], None)
        nodes: list[str] = []
        async for update in graph.astream(None, config, context=plain, stream_mode="updates"):
            nodes.extend(update)
        assert nodes == ["respond"]
        assert token not in remember_node._early
        state = (await graph.aget_state(config)).values
        assert state["messages"][-1].type == "ai"
        assert state["messages"][-1].id == state["answer_id"]
        assert len(state["messages"]) == 2 * turn
        assert (await graph.aget_state(config)).next == ()
    # Said about oneself: the early remembering has an outcome, `remember` streams it.
    nodes = await _nodes_of_turn(graph, "t", "I'm allergic to peanuts.", plain)
    assert nodes[-1] == "remember"
    items = await store.asearch((plain.user_id, "memories"))
    assert [item.value["text"] for item in items] == ["I'm allergic to peanuts"]
    # A tool call: `remember` empties the scratch.
    nodes = await _nodes_of_turn(graph, "t", "What is 6 * 7?", plain)
    assert "call_tools" in nodes
    assert nodes[-1] == "remember"
    state = (await graph.aget_state(config)).values
    assert state["scratch"] == []
    assert state["messages"][-1].id == state["answer_id"]
    # Memory off: nothing to remember, whatever is said.
    off = replace(plain, memory_policy="off")
    assert (await _nodes_of_turn(graph, "t", "I'm vegetarian.", off))[-1] == "respond"


class _NoThreads(concurrent.futures.ThreadPoolExecutor):
    """A default executor that refuses work: what runs in a thread of it fails."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("handed to a thread")


async def test_the_chat_graphs_branches_are_chosen_on_the_event_loop() -> None:
    """The routes after plan, reason and respond run on the loop, not handed to a thread of the
    default executor as LangGraph runs a plain function's branch (a wake-up per branch)."""
    graph = build_chat_graph()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_NoThreads())
    question = HumanMessage("2+2?", id="h")
    answer = AIMessage("4", id="a")
    tool_call = AIMessage("", tool_calls=[{"name": "calculator", "args": {}, "id": "t"}])
    cases = {
        "plan": ({"messages": [question], "scratch": [tool_call]}, "call_tools"),
        "reason": ({"messages": [question], "scratch": [answer]}, "respond"),
        "respond": ({"messages": [question, answer], "answer_id": "a"}, "__end__"),
    }
    for node, (state, destination) in cases.items():
        (branch,) = graph.builder.branches[node].values()
        assert await branch.path.ainvoke(state) == destination
        assert branch.ends is not None  # read off the Literal
        assert destination in branch.ends
