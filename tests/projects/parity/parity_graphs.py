"""Small graphs that both `langgraph dev` and Switchboard serve in the parity tests: a counter
with a subgraph and a custom stream event, a graph that naps (for multitask strategies and
cancels), one that asks a human (an interrupt), a chat whose fake model streams tokens, graphs
that echo the `runtime.context` they are given (a dataclass, a TypedDict and no context schema),
and the store's embed function."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import operator
import re
from typing import Annotated, Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from typing_extensions import TypedDict


class CountState(TypedDict, total=False):
    """A count and a log of the nodes that ran."""

    count: int
    log: Annotated[list[str], operator.add]


async def start(state: CountState) -> dict[str, Any]:
    """Add one, and say so on the custom stream."""
    get_stream_writer()({"started": state.get("count", 0)})
    return {"count": state.get("count", 0) + 1, "log": ["start"]}


async def inner_step(state: CountState) -> dict[str, Any]:
    """Add ten, inside the subgraph."""
    return {"count": state.get("count", 0) + 10, "log": ["inner_step"]}


async def finish(state: CountState) -> dict[str, Any]:
    """Add a hundred."""
    return {"count": state.get("count", 0) + 100, "log": ["finish"]}


def _inner() -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(CountState)
    builder.add_node("inner_step", inner_step)
    builder.add_edge(START, "inner_step")
    builder.add_edge("inner_step", END)
    return builder.compile()


def _counter() -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(CountState)
    builder.add_node("start", start)
    builder.add_node("child", _inner())
    builder.add_node("finish", finish)
    builder.add_edge(START, "start")
    builder.add_edge("start", "child")
    builder.add_edge("child", "finish")
    builder.add_edge("finish", END)
    return builder.compile()


async def nap(state: CountState) -> dict[str, Any]:
    """Take a while: `count` seconds when it is under 30, else thirty."""
    await asyncio.sleep(min(float(state.get("count", 0) or 30), 30.0))
    return {"log": ["nap"]}


def _sleeper() -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(CountState)
    builder.add_node("nap", nap)
    builder.add_edge(START, "nap")
    builder.add_edge("nap", END)
    return builder.compile()


async def ask(state: CountState) -> dict[str, Any]:
    """Ask a human for a number and add it."""
    answer = interrupt({"question": "how many?"})
    return {"count": state.get("count", 0) + int(answer), "log": ["ask"]}


def _asker() -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(CountState)
    builder.add_node("start", start)
    builder.add_node("ask", ask)
    builder.add_edge(START, "start")
    builder.add_edge("start", "ask")
    builder.add_edge("ask", END)
    return builder.compile()


class ChatState(TypedDict, total=False):
    """A conversation."""

    messages: Annotated[list[AnyMessage], add_messages]


async def reply(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
    """Answer with a fake chat model that streams its reply word by word."""
    model = GenericFakeChatModel(messages=iter([AIMessage(content="hello there, friend")]))
    return {"messages": [await model.ainvoke(state.get("messages", []), config)]}


def _chat() -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(ChatState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile()


class EchoState(TypedDict, total=False):
    """The context the graph was given."""

    seen: Any


@dataclasses.dataclass
class Tone:
    """A dataclass context schema (it refuses keys it does not declare)."""

    tone: str = "plain"
    level: int = 0


class TypedTone(TypedDict, total=False):
    """A TypedDict context schema."""

    tone: str
    level: int


def _seen(context: Any) -> Any:
    if dataclasses.is_dataclass(context) and not isinstance(context, type):
        return dataclasses.asdict(context)
    return context


async def echo(state: EchoState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Say which context the graph was given."""
    return {"seen": _seen(runtime.context)}


def _echo(context_schema: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(EchoState, context_schema=context_schema)
    builder.add_node("echo", echo)
    builder.add_edge(START, "echo")
    builder.add_edge("echo", END)
    return builder.compile()


def embed(texts: list[str]) -> list[list[float]]:
    """One unit vector per text: its words hashed into 16 buckets (offline, deterministic)."""
    vectors = []
    for text in texts:
        vector = [0.0] * 16
        for word in re.findall(r"[a-z]+", text.lower()):
            vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % 16] += 1.0
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        vectors.append([x / norm for x in vector])
    return vectors


counter_graph = _counter()
sleeper_graph = _sleeper()
asker_graph = _asker()
chat_graph = _chat()
echo_graph = _echo(Tone)
echo_typed_graph = _echo(TypedTone)
echo_any_graph = _echo(None)
