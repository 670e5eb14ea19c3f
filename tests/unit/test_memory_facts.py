"""Consolidation of facts: decisions against neighbours, the invariants, history and sources."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from langgraph.store.memory import InMemoryStore

from nodes.memory_extract import parse_statements
from stores.memory.facts import (
    Decision,
    Fact,
    Source,
    StoredFact,
    apply_decisions,
    correct,
    decide,
    enforce,
    merged_record,
    neighbours,
    new_record,
    normalize_value,
)

NS = ("u1", "memories")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def said(text: str) -> Fact:
    [fact] = parse_statements(text)
    return fact


def held(key: str, text: str, *, score: float | None = None, age_s: int = 0) -> StoredFact:
    fact = said(text)
    return StoredFact(
        key=key,
        fact=fact,
        status="active",
        score=score,
        updated_at=T0 - timedelta(seconds=age_s),
        record=new_record(fact, Source(origin="auto", at=T0)),
    )


async def tell(store: InMemoryStore, text: str, conversation: str, run: str = "r") -> list[str]:
    """Decide and apply every fact of `text` as the offline path does; the actions taken."""
    done: list[str] = []
    for fact in parse_statements(text):
        found = await neighbours(store, NS, fact)
        source = Source(origin="auto", conversation_id=conversation, run_id=f"{run}-{conversation}")
        outcomes = await apply_decisions(store, NS, [(decide(fact, found), found)], source)
        done += [o.action for o in outcomes]
    return done


def test_values_compare_without_articles_fillers_or_spelling() -> None:
    assert normalize_value("on the 14th of March") == normalize_value("14th March")
    assert normalize_value("My favorite color") == normalize_value("favourite colour")
    assert normalize_value("Lisbon") != normalize_value("Porto")


def test_decide_supersedes_an_exclusive_attribute_and_merges_the_same_fact() -> None:
    lisbon = held("k1", "I live in Lisbon")
    assert decide(said("I moved to Porto"), [lisbon]) == Decision(
        "update", said("I moved to Porto"), "k1"
    )
    again = said("I live in Lisbon, the capital")
    assert decide(said("I live in Lisbon"), [lisbon]).action == "noop"
    assert decide(again, [lisbon]).action == "update"  # a more precise value replaces it
    # a negation of a value not held changes nothing; of the value held, supersedes it
    assert decide(said("I don't live in Madrid"), [lisbon]) == Decision(
        "noop", said("I don't live in Madrid"), None
    )
    assert decide(said("I no longer live in Lisbon"), [lisbon]).action == "update"


def test_decide_keeps_several_values_unless_corrected_or_revised() -> None:
    vegetarian = held("k1", "I'm vegetarian", score=0.84)
    left_handed = held("k2", "I'm left-handed", score=0.34)
    assert decide(said("I'm vegan"), [vegetarian, left_handed]).action == "add"
    corrected = decide(said("Actually I'm vegan now"), [vegetarian, left_handed])
    assert (corrected.action, corrected.target) == ("update", "k1")
    unrelated = decide(said("Actually I'm tall"), [held("k2", "I'm left-handed", score=0.2)])
    assert unrelated.action == "add"  # a correction must be close enough to what it corrects
    revised = decide(said("I prefer aisle seats"), [held("k3", "I prefer window seats", score=0.9)])
    assert (revised.action, revised.target) == ("update", "k3")
    jazz = held("k4", "I like jazz", score=0.6)
    assert decide(said("I like rock music"), [jazz]).action == "add"


def test_decide_merges_a_near_identical_statement_of_another_shape() -> None:
    cats = held("k1", "I have two cats named Miso and Tofu", score=0.9)
    decision = decide(said("My cats are called Miso and Tofu"), [cats])
    assert (decision.action, decision.target) == ("noop", "k1")
    assert (
        decide(
            said("My cats are called Miso and Tofu"), [held("k1", "I like tea", score=0.3)]
        ).action
        == "add"
    )


def test_any_decider_is_held_to_the_invariants() -> None:
    lisbon = held("k1", "I live in Lisbon")
    porto = said("I live in Porto")
    # a target that is not a neighbour: an update becomes an add, a noop changes nothing
    assert enforce(Decision("update", porto, "invented"), [lisbon]) == Decision(
        "update", porto, "k1"
    )
    assert enforce(Decision("noop", porto, "invented"), [lisbon]) == Decision("noop", porto)
    # adding a fact already held merges it; adding a new exclusive value supersedes
    assert enforce(Decision("add", said("I live in Lisbon")), [lisbon]).action == "noop"
    assert enforce(Decision("add", porto), [lisbon]) == Decision("update", porto, "k1")
    tea = said("I like tea")
    assert enforce(Decision("add", tea), [lisbon]) == Decision("add", tea)


async def test_a_new_value_supersedes_the_old_which_stays_as_history_with_its_time() -> None:
    store = InMemoryStore()
    assert await tell(store, "I live in Lisbon.", "c1") == ["added"]
    assert await tell(store, "Actually, I moved to Porto last month.", "c2") == ["updated"]
    [item] = await store.asearch(NS)
    record = item.value
    assert (record["text"], record["value"], record["status"]) == (
        "I moved to Porto last month",
        "Porto",
        "active",
    )
    assert record["source"]["conversation_id"] == "c2"
    [old] = record["history"]
    assert (old["text"], old["source"]["conversation_id"]) == ("I live in Lisbon", "c1")
    assert datetime.fromisoformat(old["until"]) >= datetime.fromisoformat(old["source"]["at"])


async def test_the_same_fact_twice_is_one_memory_with_both_sources() -> None:
    store = InMemoryStore()
    await tell(store, "My dog's name is Biscuit.", "c1")
    assert await tell(store, "My dog is called Biscuit.", "c2") == ["merged"]
    [item] = await store.asearch(NS)
    assert item.value["mentions"] == 2
    assert [s["conversation_id"] for s in item.value["seen"]] == ["c1", "c2"]


def test_a_retried_run_is_not_counted_twice() -> None:
    record = new_record(said("I like tea"), Source(origin="auto", run_id="r1", at=T0))
    again = merged_record(record, Source(origin="auto", run_id="r1", at=T0))
    assert again["mentions"] == 1
    assert merged_record(record, Source(origin="auto", run_id="r2"))["mentions"] == 2


async def test_negating_a_held_fact_supersedes_it_and_a_model_delete_retracts() -> None:
    store = InMemoryStore()
    await tell(store, "I drink coffee every morning.", "c1")
    assert await tell(store, "I don't drink coffee anymore.", "c2") == ["updated"]
    [item] = await store.asearch(NS)
    assert item.value["negated"] is True
    assert item.value["history"][0]["text"] == "I drink coffee every morning"
    # a model may decide "delete": the memory is kept with its history, not recalled
    fact = said("I don't like jazz")
    await tell(store, "I like jazz", "c3")
    [jazz] = [i for i in await store.asearch(NS) if i.value["attribute"] == "likes"]
    found = await neighbours(store, NS, fact)
    [outcome] = await apply_decisions(
        store, NS, [(Decision("delete", fact, jazz.key), found)], Source(origin="auto")
    )
    assert (outcome.action, outcome.text) == ("retracted", "I like jazz")
    kept = await store.aget(NS, jazz.key)
    assert kept is not None
    assert kept.value["status"] == "retracted"
    assert [f.key for f in await neighbours(store, NS, fact)] == [item.key]


async def test_facts_of_one_message_see_each_other() -> None:
    store = InMemoryStore()
    await tell(store, "I work at Initech.", "c1")
    done = await tell(store, "I no longer work at Initech, I work at Hooli now.", "c2")
    assert done == ["updated", "updated"]
    items = await store.asearch(NS)
    assert [(i.value["value"], i.value["negated"]) for i in items] == [("Hooli", False)]
    assert [h["value"] for h in items[0].value["history"]] == ["Initech", "Initech"]


async def test_a_correction_supersedes_the_other_current_fact_of_its_slot() -> None:
    store = InMemoryStore()
    await tell(store, "I live in Lisbon.", "c1")
    [lisbon] = await store.asearch(NS)
    outcome = await correct(
        store, NS, "home", said("I live in Porto"), Source(origin="api"), extra={"tags": ["x"]}
    )
    assert (outcome.action, outcome.key) == ("added", "home")
    home = await store.aget(NS, "home")
    old = await store.aget(NS, lisbon.key)
    assert home is not None
    assert old is not None
    assert home.value["tags"] == ["x"]
    assert old.value["status"] == "retracted"
    assert old.value["superseded_by"] == "home"
    again = await correct(store, NS, "home", said("I live in Braga"), Source(origin="api"))
    assert (again.action, again.replaced) == ("updated", "I live in Porto")
