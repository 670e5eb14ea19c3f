"""What one model call is given: the prompt, within LLM_MAX_INPUT_CHARS whatever the input."""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from nodes.context import AgentContext
from nodes.llm import capped, prompt
from nodes.state import AgentState


def size(messages: list[BaseMessage]) -> int:
    return sum(len(str(m.content)) for m in messages)


def test_a_prompt_within_the_cap_is_given_whole() -> None:
    messages: list[BaseMessage] = [SystemMessage("sys"), HumanMessage("hi")]
    assert capped(messages, max_chars=100) == messages


def test_older_window_messages_go_first_then_long_texts_are_cut() -> None:
    window: list[BaseMessage] = [
        HumanMessage("old question " * 50, id="h1"),
        AIMessage("old answer " * 50, id="a1"),
        HumanMessage("new question", id="h2"),
    ]
    kept = capped([SystemMessage("sys"), *window], max_chars=200, droppable=2)
    assert [m.id for m in kept[1:]] == ["h2"]
    huge = [SystemMessage("s" * 5000), HumanMessage("(" * 32_000)]
    cut = capped(huge, max_chars=1000)
    assert size(cut) <= 1000
    assert [type(m) for m in cut] == [SystemMessage, HumanMessage]
    assert len(str(cut[0].content)) == len(str(cut[1].content)) == 500


def test_the_prompt_of_a_huge_message_is_capped_by_the_context() -> None:
    state: AgentState = {"messages": [HumanMessage("x" * 50_000)]}
    ctx = AgentContext(max_input_chars=2000)
    assert size(prompt(state, ctx)) <= 2000
