"""Selective recall: what reaches the prompt for a question, and the extractor an agent gets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from langgraph.store.base import SearchItem
from langgraph.store.memory import InMemoryStore
from pydantic import SecretStr

from nodes.context import AgentContext, ModelSpec
from nodes.memory import (
    RecallPolicy,
    asked_thing,
    extractor_for,
    is_broad,
    recall_memories,
    select_memories,
)
from nodes.memory_extract import ModelExtractor, OfflineExtractor, parse_statements
from stores.memory.facts import Source, new_record

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RecallPolicy()


def item(text: str, score: float | None) -> SearchItem:
    facts = parse_statements(text)
    value = new_record(facts[0], Source(origin="auto")) if facts else {"text": text}
    return SearchItem(("u", "memories"), text, value, NOW, NOW, score=score)


def texts(question: str, items: list[SearchItem], policy: RecallPolicy = POLICY) -> list[str]:
    return [m["text"] for m in select_memories(question, items, policy=policy)]


@pytest.mark.parametrize(
    ("question", "thing"),
    [
        ("What is my dog called?", {"dog"}),
        ("What's my favourite colour?", {"favourite", "colour"}),
        ("What are my cats' names?", {"cat"}),
        ("What's my name?", {"name"}),
        ("Where does my sister live?", {"sister"}),
        ("Which city do I live in?", set()),
    ],
)
def test_the_thing_a_question_asks_about(question: str, thing: set[str]) -> None:
    assert asked_thing(question) == thing


def test_only_memories_close_to_the_best_match_are_kept() -> None:
    items = [item("I live in Berlin", 0.33), item("I work at Hooli now", 0.30)]
    # "work" is shared with the question: Hooli ranks first, Berlin falls below 0.85 of it
    assert texts("Where do I work?", items) == ["I work at Hooli now"]
    close = [item("I play tennis on Sundays", 0.60), item("I love hiking", 0.55)]
    assert texts("What do I do on weekends?", close) == [
        "I play tennis on Sundays",
        "I love hiking",
    ]
    assert texts("What do I do on weekends?", close, replace(POLICY, k=1)) == [
        "I play tennis on Sundays"
    ]


def test_nothing_is_recalled_below_the_minimum_score() -> None:
    items = [item("My birthday is on the 14th of March", 0.20)]
    assert texts("Which car do I drive?", items) == []


def test_a_question_about_my_thing_never_brings_up_another_thing() -> None:
    items = [item("My dog's name is Biscuit", 0.43), item("My cats are called Miso", 0.32)]
    assert texts("What's my sister's name?", items) == []
    assert texts("What's my favourite food?", [item("My favourite colour is teal", 0.6)]) == []
    named = [item("My name is Ana Costa", 0.57), item("My son's name is Leo", 0.50)]
    assert texts("What's my name?", named) == ["My name is Ana Costa"]


def test_without_scores_shared_words_decide() -> None:
    items = [item("I'm vegetarian", None), item("I like jazz", None)]
    assert texts("Do I still listen to jazz?", items) == ["I like jazz"]
    assert texts("Plan a dinner for me tonight", items) == ["I'm vegetarian", "I like jazz"]
    assert texts("What is the capital of France?", items) == []


def test_questions_about_the_user_in_general() -> None:
    assert is_broad("What do you know about me?")
    assert is_broad("Tell me about myself")
    assert not is_broad("Where am I from?")
    assert not is_broad("What is 2+2?")


async def test_superseded_and_retracted_memories_are_never_recalled() -> None:
    store = InMemoryStore()
    record = new_record(parse_statements("I like jazz")[0], Source(origin="auto"))
    await store.aput(("u", "memories"), "live", record)
    await store.aput(("u", "memories"), "gone", {**record, "status": "retracted"})
    await store.aput(("u", "memories"), "legacy", {"text": "I like tea"})  # before facts
    recalled = await recall_memories(store, "u", "What do you know about me?")
    assert sorted(m["key"] for m in recalled) == ["legacy", "live"]


def test_an_agent_on_an_openai_compatible_model_gets_the_model_extractor() -> None:
    assert isinstance(extractor_for(AgentContext()), OfflineExtractor)
    openai = AgentContext(model=ModelSpec(provider="openai", name="x", api_key=SecretStr("sk-x")))
    assert isinstance(extractor_for(openai), ModelExtractor)
    assert isinstance(extractor_for(replace(openai, memory_extractor="offline")), OfflineExtractor)
    forced = replace(AgentContext(), memory_extractor="model")
    assert isinstance(extractor_for(forced), OfflineExtractor)  # the offline model cannot
