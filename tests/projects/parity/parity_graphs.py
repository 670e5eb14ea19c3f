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


def _line(state: Any, *nodes: tuple[str, Any], context_schema: Any = None) -> Any:
    """A graph of `state` running `nodes` (name, node) one after the other."""
    builder = StateGraph(state, context_schema=context_schema)
    previous = START
    for name, node in nodes:
        builder.add_node(name, node)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder.compile()


async def nap(state: CountState) -> dict[str, Any]:
    """Take a while: `count` seconds when it is under 30, else thirty."""
    await asyncio.sleep(min(float(state.get("count", 0) or 30), 30.0))
    return {"log": ["nap"]}


async def ask(state: CountState) -> dict[str, Any]:
    """Ask a human for a number and add it."""
    answer = interrupt({"question": "how many?"})
    return {"count": state.get("count", 0) + int(answer), "log": ["ask"]}


class ChatState(TypedDict, total=False):
    """A conversation."""

    messages: Annotated[list[AnyMessage], add_messages]


async def reply(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
    """Answer with a fake chat model that streams its reply word by word."""
    model = GenericFakeChatModel(messages=iter([AIMessage(content="hello there, friend")]))
    return {"messages": [await model.ainvoke(state.get("messages", []), config)]}


class EchoState(TypedDict, total=False):
    """The context the graph was given, and which client keys its `configurable` holds."""

    seen: Any
    configured: Any


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


# The `configurable` keys the parity tests set (the servers add others of their own).
CLIENT_KEYS = ("tone", "level", "junk", "cron_id")


async def echo(state: EchoState, runtime: Runtime[Any], config: RunnableConfig) -> dict[str, Any]:
    """Say which context the graph was given, and which client keys its config holds."""
    configurable = config.get("configurable") or {}
    return {
        "seen": _seen(runtime.context),
        "configured": {key: configurable[key] for key in CLIENT_KEYS if key in configurable},
    }


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


counter_graph = _line(
    CountState,
    ("start", start),
    ("child", _line(CountState, ("inner_step", inner_step))),
    ("finish", finish),
)
sleeper_graph = _line(CountState, ("nap", nap))
asker_graph = _line(CountState, ("start", start), ("ask", ask))
chat_graph = _line(ChatState, ("reply", reply))
echo_graph = _line(EchoState, ("echo", echo), context_schema=Tone)
echo_typed_graph = _line(EchoState, ("echo", echo), context_schema=TypedTone)
echo_any_graph = _line(EchoState, ("echo", echo))
