"""The offline model's answers: a passage's statement (not its heading), the one memory that
matches the question, an acknowledgement of what the user just said."""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage

from nodes.offline_model import (
    _arithmetic,
    _best_sentence,
    _without_parenthetical,
    compose_answer,
    intents,
    matching_memories,
    terms,
)
from nodes.prompts import system_text
from nodes.state import Memory


def test_a_heading_that_repeats_the_question_is_not_the_answer() -> None:
    passage = "# What is Switchboard?\nSwitchboard is a self-hosted server for AI agents. It runs."
    best = _best_sentence(passage, terms("What is Switchboard?"))
    assert best == "Switchboard is a self-hosted server for AI agents."


def test_a_passage_of_questions_only_still_gives_an_answer() -> None:
    assert _best_sentence("Is it fast? Is it small?", terms("is it fast")) == "Is it fast?"


def system_with(memories: list[str]) -> SystemMessage:
    return SystemMessage(system_text(system_prompt="", summary="", memories=[
        Memory(key=f"k{i}", text=text) for i, text in enumerate(memories)
    ], sources=[], warnings=[]))  # fmt: skip


def test_the_answer_holds_the_matching_memory_only() -> None:
    memories = ["I live in Berlin", "I work at Hooli now", "My son is called Leo"]
    answer = compose_answer([system_with(memories), HumanMessage("Where do I work?")])
    assert answer == "From what you've told me before: you work at Hooli now."
    assert matching_memories("What is my son called?", memories) == ["My son is called Leo"]
    # nothing in common: the first (best recalled) one if the question is about the user
    assert matching_memories("Which city am I in?", memories) == ["I live in Berlin"]
    assert matching_memories("Which city is the capital?", memories) == []


def test_a_question_about_the_user_in_general_gets_every_memory_recalled() -> None:
    memories = ["I live in Berlin", "My son is called Leo"]
    answer = compose_answer([system_with(memories), HumanMessage("What do you know about me?")])
    assert answer == (
        "From what you've told me before: you live in Berlin; your son is called Leo."
    )


def test_a_statement_is_acknowledged_instead_of_reciting_memories() -> None:
    answer = compose_answer(
        [system_with(["My favourite colour is blue"]), HumanMessage("My favourite colour is teal.")]
    )
    assert answer == "Noted: your favourite colour is teal."


def test_arithmetic_is_found_in_linear_time_whatever_the_message() -> None:
    assert _arithmetic("What is 17 * (4 + 2)?") == "17 * (4 + 2)"
    assert _arithmetic("compute ((9^999)^999)^9 please") == "((9^999)^999)^9"
    assert _arithmetic("no maths (here) 2024") is None
    assert _arithmetic("(" * 32_000) is None  # quadratic for the regex this replaced
    assert _arithmetic("1" + " " * 32_000 + "+ 2") == "1" + " " * 32_000 + "+ 2"


def test_clauses_split_on_then_in_linear_time() -> None:
    tools = ["calculator", "current_time"]
    assert [c["name"] for c in intents("compute 3+4 then what time is it", tools)] == [
        "calculator",
        "current_time",
    ]
    assert intents("a" + "\u2003" * 32_000 + "b", tools) == []  # quadratic before


def test_a_source_title_loses_its_trailing_parenthetical() -> None:
    assert _without_parenthetical("Guide (docs/guide.md)") == "Guide"
    assert _without_parenthetical("a ((b)") == "a"
    assert _without_parenthetical("(" * 32_000 + ")") == ""
    assert _without_parenthetical("f(x) = y") == "f(x) = y"
