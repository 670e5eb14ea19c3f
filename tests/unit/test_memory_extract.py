"""The offline fact grammar: first-person statements, corrections, negations, hostile input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nodes.memory_extract import (
    INLINE_CHARS,
    MAX_FACTS,
    MAX_STATEMENT_CHARS,
    OfflineExtractor,
    first_fact,
    note,
    parse_statements,
)
from stores.memory.facts import Fact


def one(text: str) -> Fact:
    facts = parse_statements(text)
    assert len(facts) == 1, facts
    return facts[0]


@pytest.mark.parametrize(
    ("said", "attribute", "value", "exclusive"),
    [
        ("I am a nurse.", "is a", "nurse", False),
        ("I'm vegetarian", "is", "vegetarian", False),
        ("I'm allergic to shellfish.", "allergic to", "shellfish", False),
        ("I'm from Ireland", "from", "Ireland", True),
        ("I'm 41 years old.", "age", "41", True),
        ("I'm learning Japanese", "learning", "Japanese", False),
        ("I have two cats named Miso and Tofu", "has", "two cats named Miso and Tofu", False),
        ("I've got a red bike", "has", "a red bike", False),
        ("I live in Lisbon.", "lives in", "Lisbon", True),
        ("I work as a data analyst", "job", "a data analyst", True),
        ("I work for Initech", "works at", "Initech", True),
        ("I like jazz too", "likes", "jazz", False),
        ("I love hiking in the mountains", "likes", "hiking in the mountains", False),
        ("I prefer aisle seats", "prefers", "aisle seats", False),
        ("I moved to Porto last month", "lives in", "Porto", True),
        ("My favourite colour is teal.", "favourite colour", "teal", True),
        ("my favorite color is teal", "favourite colour", "teal", True),
        ("My kids are Tom and Ann", "kids", "Tom and Ann", True),
        ("My dog is called Biscuit", "dog's name", "Biscuit", True),
        ("My dog's name is Biscuit", "dog's name", "Biscuit", True),
        ("My cats are named Miso and Tofu", "cat's name", "Miso and Tofu", True),
        ("My name is Ana Costa", "name", "Ana Costa", True),
        ("Call me Ada", "name", "Ada", True),
        ("My doctor is Dr. Okafor.", "doctor", "Dr. Okafor", True),
        ("I drive a red Volvo", "drive", "a red Volvo", False),
        ("I play tennis on Sundays", "play", "tennis on Sundays", False),
    ],
)
def test_first_person_statements_become_subject_attribute_value(
    said: str, attribute: str, value: str, exclusive: bool
) -> None:
    fact = one(said)
    assert (fact.subject, fact.attribute, fact.value) == ("user", attribute, value)
    assert fact.exclusive is exclusive
    assert not fact.negated
    assert fact.text == said.rstrip(".")


@pytest.mark.parametrize(
    ("said", "attribute", "value"),
    [
        ("I don't drink coffee anymore.", "drink", "coffee"),
        ("I no longer smoke", "does", "smoke"),
        ("I don't smoke", "does", "smoke"),
        ("I'm not married", "is", "married"),
        ("I hate mushrooms", "likes", "mushrooms"),
        ("I can't stand olives", "likes", "olives"),
        ("I don't have a car", "has", "a car"),
        ("My favourite season isn't autumn any more", "favourite season", "autumn"),
        ("I no longer live in Lisbon", "lives in", "Lisbon"),
        ("I never eat pork", "eat", "pork"),
    ],
)
def test_negations_are_facts_that_say_not(said: str, attribute: str, value: str) -> None:
    fact = one(said)
    assert (fact.attribute, fact.value, fact.negated) == (attribute, value, True)


@pytest.mark.parametrize(
    ("said", "correction"),
    [
        ("Actually, I'm vegan now.", True),
        ("Now I work as a paramedic", True),
        ("I don't drink coffee anymore", True),
        ("I'm not a morning person", False),
        ("I'm vegan", False),
        ("Correction: my manager is Priya", True),
    ],
)
def test_corrections_are_marked(said: str, correction: bool) -> None:
    assert one(said).correction is correction


def test_one_message_can_state_several_facts_and_a_correction_marks_only_its_clause() -> None:
    facts = parse_statements(
        "Hi! I live in Berlin and I work at Hooli as a designer. Actually, I like tea now."
    )
    assert [(f.attribute, f.value, f.correction) for f in facts] == [
        ("lives in", "Berlin", False),
        ("works at", "Hooli", False),
        ("job", "designer", False),
        ("likes", "tea", True),
    ]


def test_a_change_of_employer_in_one_sentence_is_a_negation_then_a_new_value() -> None:
    facts = parse_statements("I no longer work at Initech, I work at Hooli now.")
    assert [(f.attribute, f.value, f.negated) for f in facts] == [
        ("works at", "Initech", True),
        ("works at", "Hooli", False),
    ]


@pytest.mark.parametrize(
    "said",
    [
        "What is my dog called?",
        "Where do I live",
        "Do I like jazz?",
        "I think that's great",
        "I want to know how to cook rice",
        "I'm not sure",
        "I'm going to the shop",
        "I'm a bit confused about this",
        "I have a question about Qdrant",
        "I need help with my code",
        "Can you tell me what my favourite colour is",
        "What is 6 * 7?",
        "",
        "   ",
    ],
)
def test_questions_requests_and_chatter_state_no_fact(said: str) -> None:
    assert parse_statements(said) == []


def test_remember_prefixes_are_not_part_of_the_fact() -> None:
    assert one("Please remember that I'm vegetarian.").text == "I'm vegetarian"
    assert one("Remember: my locker is number 42").value == "number 42"


def test_the_api_reads_the_first_fact_and_the_tool_keeps_anything_else_as_a_note() -> None:
    assert first_fact("I live in Porto. I like tea.") == one("I live in Porto")
    assert first_fact("the spare key is under the pot") is None
    kept = note("the spare key is under the pot.")
    assert kept is not None
    assert (kept.attribute, kept.value) == ("note", "the spare key is under the pot")
    assert note("   ") is None


HOSTILE = [
    "my " + "a " * 20_000 + "is",
    "my " + "x" * 50_000,
    "I " * 30_000,
    "I'm " + "not " * 20_000,
    "i " + "really " * 20_000 + "like",
    "Actually, " * 20_000 + "I live in " + "Porto " * 5_000,
    ("I live in Lisbon and " * 5_000),
    "My " + "'s " * 20_000 + "name is Rex",
    "." * 100_000,
    "I like " + ", I " * 20_000,
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text", HOSTILE, ids=[f"hostile-{i}" for i in range(len(HOSTILE))])
def test_hostile_input_is_read_bounded_and_in_linear_time(text: str) -> None:
    facts = parse_statements(text)
    assert len(facts) <= MAX_FACTS
    assert all(len(f.text) <= MAX_STATEMENT_CHARS for f in facts)


async def test_the_offline_extractor_parses_a_short_text_on_the_loop_and_a_long_one_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handed: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        handed.append(args[0])
        return await to_thread(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    short = "I live in Porto."
    long = "I live in Porto. " + "The weather is fine today, " * (INLINE_CHARS // 20)
    assert len(short) <= INLINE_CHARS < len(long)
    for text in (short, long):
        assert await OfflineExtractor().extract(text) == parse_statements(text)
    assert handed == [long]
