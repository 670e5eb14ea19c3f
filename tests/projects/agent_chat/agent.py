"""The graph Agent Chat UI's tests talk to (assistant id `agent`, Agent Chat UI's default): a
chat whose answer streams token by token from a subgraph, pushes a generative-UI message (a
custom event), and asks a human before it approves anything (an interrupt)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.graph.ui import AnyUIMessage, push_ui_message, ui_message_reducer
from langgraph.types import interrupt
from typing_extensions import TypedDict


class ChatState(TypedDict, total=False):
    """Agent Chat UI's state: messages, and the generative-UI messages beside them."""

    messages: Annotated[list[AnyMessage], add_messages]
    ui: Annotated[Sequence[AnyUIMessage], ui_message_reducer]


def _last_human_text(messages: Sequence[AnyMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            content = message.content
            if isinstance(content, str):
                return content
            return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


class PacedFakeChatModel(GenericFakeChatModel):
    """langchain-core's fake chat model, pausing `pace_s` before each streamed chunk."""

    pace_s: float = 0.0

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            await asyncio.sleep(self.pace_s)
            yield chunk


async def answer(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
    """Stream `You said: <question> (run <id>)` word by word from a fake chat model (20 ms
    per chunk, a tenth of a second when the question says "slowly"), and show it as a card
    too; the run id makes a regenerated answer differ from the first."""
    run_id = str((config.get("metadata") or {}).get("run_id", ""))[-8:]
    question = _last_human_text(state.get("messages", []))
    reply = f"You said: {question} (run {run_id})"
    model = PacedFakeChatModel(
        messages=iter([AIMessage(content=reply)]),
        pace_s=0.1 if "slowly" in question.lower() else 0.02,
    )
    message = await model.ainvoke(state.get("messages", []), config)
    push_ui_message("card", {"text": reply}, message=message)
    return {"messages": [message]}


async def approval(state: ChatState) -> dict[str, Any]:
    """Ask a human when the question asks for an approval; record the decision."""
    if "approve" not in _last_human_text(state.get("messages", [])).lower():
        return {}
    decision = interrupt({"question": "May I approve it?"})
    return {"messages": [AIMessage(content=f"Decision: {decision}")]}


def build_model_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """The subgraph that answers (one node, `answer`)."""
    builder = StateGraph(ChatState)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile()


def build_agent_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """model (a subgraph) → approval (an interrupt when asked to approve)."""
    builder = StateGraph(ChatState)
    builder.add_node("model", build_model_graph())
    builder.add_node("approval", approval)
    builder.add_edge(START, "model")
    builder.add_edge("model", "approval")
    builder.add_edge("approval", END)
    return builder.compile(name="agent")


agent_graph = build_agent_graph()
