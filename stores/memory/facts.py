"""Facts about a user and their consolidation: add, update (supersede), retract or merge.

A fact is one (subject, attribute, value) statement, e.g. ("user", "lives in", "Porto"),
stored as one item of the user's memory namespace. Its value (`FactRecord`) carries the
sentence the user said (`text`, the only field embedded for recall), the structure, where and
when it was said (`source`), how often it was repeated (`mentions`, `seen`) and the values it
replaced (`history`). A decision for each new fact (`Decision`) is taken against the most
similar existing facts (`neighbours`) and applied by `apply_decisions`, which also keeps the
invariants whoever decided (the offline rules of `decide` or a chat model):

- a new value for the same subject and attribute of an *exclusive* attribute (one value at a
  time: home city, employer, favourite colour) supersedes the old one, which moves to
  `history` with its time and is no longer recalled;
- a fact already held (same subject, attribute and normalised value) is merged into it;
- a fact that negates a held one ("I don't drink coffee anymore") supersedes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from langgraph.store.base import BaseStore, Item, SearchItem

ACTIVE = "active"
RETRACTED = "retracted"
USER = "user"
Action = Literal["add", "update", "delete", "noop"]
Origin = Literal["auto", "tool", "api"]

ACTIVE_FILTER: dict[str, Any] = {"status": {"$ne": RETRACTED}}
"""Search filter of the facts that may be recalled (items written before facts had a status
count as active)."""

MAX_TEXT_CHARS = 500
MAX_FIELD_CHARS = 200
SEEN_LIMIT = 20
SAME_SLOT_LIMIT = 50

# A correction of a non-exclusive attribute ("Actually, I'm vegan now") replaces the most
# similar fact of the same attribute if it is at least this close; without a correction word
# the new statement must be this close to count as a revision rather than a second value.
CORRECTION_MIN_SIMILARITY = 0.4
REVISION_MIN_SIMILARITY = 0.85
# Two statements of different shape this close say the same thing ("I have a dog called Rex" /
# "My dog is called Rex"): the second is merged into the first.
DUPLICATE_MIN_SIMILARITY = 0.88

_VALUE_WORD = re.compile(r"[\w']+")
_FILLER_TEXT = "a an the my our on in at of to for is are was called named very really just"
_FILLER = frozenset(_FILLER_TEXT.split())
_SPELLING = {"favorite": "favourite", "color": "colour", "colors": "colours"}


def normalize_value(value: str) -> str:
    """A value reduced to its words (lower case, articles and fillers dropped, "'s" cut), so
    "on the 14th of March" and "14th March" compare equal."""
    words = []
    for word in _VALUE_WORD.findall(value.lower()[:MAX_FIELD_CHARS]):
        word = word.removesuffix("'s").strip("'")
        word = _SPELLING.get(word, word)
        if word and word not in _FILLER:
            words.append(word)
    return " ".join(words)


def normalize_attribute(attribute: str) -> str:
    """An attribute in one spelling: lower case, single spaces, no leading article."""
    words = [_SPELLING.get(w, w) for w in attribute.lower().split()]
    if words and words[0] in {"the", "a", "an"}:
        words = words[1:]
    return " ".join(words)[:MAX_FIELD_CHARS]


def _clip(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


@dataclass(frozen=True, slots=True)
class Fact:
    """One statement about a subject: `attribute` of `subject` is (or, negated, is not) `value`.

    `exclusive` attributes hold one value at a time (a new one supersedes the old);
    `correction` marks a statement that says it replaces something ("actually", "now",
    "no longer"); `text` is the statement as the user made it.
    """

    subject: str
    attribute: str
    value: str
    text: str
    negated: bool = False
    exclusive: bool = False
    correction: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "subject", normalize_attribute(self.subject) or USER)
        object.__setattr__(self, "attribute", normalize_attribute(self.attribute))
        object.__setattr__(self, "value", _clip(self.value, MAX_FIELD_CHARS))
        object.__setattr__(self, "text", _clip(self.text, MAX_TEXT_CHARS))

    @property
    def value_key(self) -> str:
        """The normalised value (`normalize_value`)."""
        return normalize_value(self.value)

    @property
    def slot_key(self) -> str:
        """The item key of this fact when it is added: stable for subject, attribute and value,
        so the same fact said twice (or a retried run) lands on the same item."""
        raw = f"{self.subject}\x00{self.attribute}\x00{self.value_key}"
        return "fact-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Source:
    """Where and when a fact was stated: through the chat (`auto`), the `remember` tool or the
    API, in which conversation and run, and which extractor read it."""

    origin: Origin
    conversation_id: str | None = None
    run_id: str | None = None
    extractor: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_json(self) -> dict[str, Any]:
        """The source as stored in a record."""
        return {
            "origin": self.origin,
            "conversation_id": self.conversation_id,
            "run_id": self.run_id,
            "extractor": self.extractor,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class StoredFact:
    """A fact held in the store, as a neighbour of a new one."""

    key: str
    fact: Fact
    status: str
    score: float | None
    updated_at: datetime
    record: dict[str, Any]

    @property
    def active(self) -> bool:
        """Whether it may be recalled."""
        return self.status != RETRACTED


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a new fact: add it, update (supersede) or delete (retract) `target`,
    or nothing (`noop`: it is already held by `target`, which records the mention)."""

    action: Action
    fact: Fact
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `apply_decisions` did: the action taken, the item written, the fact's text."""

    action: Literal["added", "updated", "merged", "retracted"]
    key: str
    text: str
    replaced: str | None = None


def fact_of(value: Mapping[str, Any]) -> Fact:
    """The fact a stored record holds; a record without structure (a free note, or an item
    written before facts were structured) is a non-exclusive note of the user."""
    text = str(value.get("text") or "")
    return Fact(
        subject=str(value.get("subject") or USER),
        attribute=str(value.get("attribute") or "note"),
        value=str(value.get("value") if value.get("value") is not None else text),
        text=text,
        negated=bool(value.get("negated", False)),
        exclusive=bool(value.get("exclusive", False)),
    )


def stored_fact(item: Item | SearchItem) -> StoredFact:
    """A store item as a `StoredFact`."""
    value = dict(item.value)
    return StoredFact(
        key=item.key,
        fact=fact_of(value),
        status=str(value.get("status") or ACTIVE),
        score=item.score if isinstance(item, SearchItem) else None,
        updated_at=item.updated_at,
        record=value,
    )


def _snapshot(record: Mapping[str, Any], *, until: datetime) -> dict[str, Any]:
    """The current value of `record` as a history entry, stamped with when it ended."""
    return {
        "text": record.get("text"),
        "value": record.get("value"),
        "negated": bool(record.get("negated", False)),
        "status": record.get("status", ACTIVE),
        "source": record.get("source"),
        "until": until.isoformat(),
    }


def new_record(fact: Fact, source: Source) -> dict[str, Any]:
    """The stored value of a fact stated once, now."""
    when = source.at.isoformat()
    return {
        "kind": "fact",
        "text": fact.text,
        "subject": fact.subject,
        "attribute": fact.attribute,
        "value": fact.value,
        "value_key": fact.value_key,
        "negated": fact.negated,
        "exclusive": fact.exclusive,
        "status": ACTIVE,
        "source": source.as_json(),
        "first_seen": when,
        "mentions": 1,
        "seen": [source.as_json()],
        "history": [],
    }


def superseding_record(
    old: Mapping[str, Any], fact: Fact, source: Source, *, history_limit: int
) -> dict[str, Any]:
    """`fact` as the new value of the item holding `old`; `old` moves to its history."""
    record = new_record(fact, source)
    history = [*(old.get("history") or []), _snapshot(old, until=source.at)]
    record["history"] = history[-history_limit:] if history_limit > 0 else []
    record["first_seen"] = old.get("first_seen") or record["first_seen"]
    return record


def retracted_record(
    old: Mapping[str, Any], source: Source, *, history_limit: int
) -> dict[str, Any]:
    """`old` retracted: kept with its history, never recalled."""
    record = dict(old)
    history = [*(old.get("history") or []), _snapshot(old, until=source.at)]
    record["history"] = history[-history_limit:] if history_limit > 0 else []
    record["status"] = RETRACTED
    record["retracted_at"] = source.at.isoformat()
    record["retracted_by"] = source.as_json()
    return record


def merged_record(old: Mapping[str, Any], source: Source) -> dict[str, Any]:
    """`old` stated again: one more mention (a retried run is not counted twice)."""
    record = dict(old)
    seen = list(old.get("seen") or [])
    if source.run_id is not None and any(s.get("run_id") == source.run_id for s in seen):
        return record
    record["mentions"] = int(old.get("mentions") or 1) + 1
    record["seen"] = [*seen, source.as_json()][-SEEN_LIMIT:]
    record["last_seen"] = source.at.isoformat()
    return record


# -- finding the neighbours of a new fact ---------------------------------------------------


async def same_slot(store: BaseStore, namespace: tuple[str, ...], fact: Fact) -> list[StoredFact]:
    """The active facts of the namespace with the same subject and attribute (newest first)."""
    items = await store.asearch(
        namespace,
        filter={"subject": fact.subject, "attribute": fact.attribute, **ACTIVE_FILTER},
        limit=SAME_SLOT_LIMIT,
    )
    return [stored_fact(item) for item in items]


async def neighbours(
    store: BaseStore, namespace: tuple[str, ...], fact: Fact, *, k: int = 5
) -> list[StoredFact]:
    """The existing facts a new one is decided against: every active fact with its subject and
    attribute, and the `k` active facts closest in meaning (scored when the store embeds)."""
    slot = await same_slot(store, namespace, fact)
    similar = [
        stored_fact(item)
        for item in await store.asearch(namespace, query=fact.text, filter=ACTIVE_FILTER, limit=k)
    ]
    scores = {s.key: s.score for s in similar}
    merged: dict[str, StoredFact] = {}
    for found in [*similar, *slot]:
        if found.key not in merged:
            score = scores.get(found.key, found.score)
            merged[found.key] = StoredFact(
                key=found.key,
                fact=found.fact,
                status=found.status,
                score=score,
                updated_at=found.updated_at,
                record=found.record,
            )
    return list(merged.values())


# -- deciding ---------------------------------------------------------------------------------


def _same_slot(a: Fact, b: Fact) -> bool:
    return a.subject == b.subject and a.attribute == b.attribute


def _slot_rules(fact: Fact, slot: Sequence[StoredFact]) -> Decision | None:
    """The decision the facts of the same subject and attribute force, if any."""
    for held in slot:
        if held.fact.value_key == fact.value_key:
            action: Action = "noop" if held.fact.negated == fact.negated else "update"
            return Decision(action, fact, held.key)
    if fact.exclusive and slot:
        if fact.negated:
            # "I don't live in Lisbon" while Porto is held: consistent, nothing to change.
            held_positive = any(not e.fact.negated for e in slot)
            return Decision("noop", fact, None) if held_positive else None
        return Decision("update", fact, max(slot, key=lambda e: e.updated_at).key)
    return None


def decide(fact: Fact, existing: Sequence[StoredFact]) -> Decision:
    """The offline decision for `fact` against its neighbours (deterministic).

    Same value held: noop (merge), or update when the polarity flips. Exclusive attribute
    holding another value: update it (a negation of a value not held changes nothing).
    Non-exclusive attribute: update the closest fact of the attribute when the statement is a
    correction, or nearly the same sentence. A near-identical statement of another shape:
    noop. Otherwise: add.
    """
    live = [e for e in existing if e.active]
    slot = [e for e in live if _same_slot(e.fact, fact)]
    forced = _slot_rules(fact, slot)
    if forced is not None:
        return forced
    if slot:
        closest = max(slot, key=lambda e: (e.score or 0.0, e.updated_at))
        similarity = closest.score
        if fact.correction and (similarity is None or similarity >= CORRECTION_MIN_SIMILARITY):
            return Decision("update", fact, closest.key)
        if similarity is not None and similarity >= REVISION_MIN_SIMILARITY:
            return Decision("update", fact, closest.key)
    duplicates = [
        e
        for e in live
        if e.score is not None
        and e.score >= DUPLICATE_MIN_SIMILARITY
        and e.fact.negated == fact.negated
    ]
    if duplicates:
        return Decision("noop", fact, max(duplicates, key=lambda e: e.score or 0.0).key)
    return Decision("add", fact)


def enforce(decision: Decision, existing: Sequence[StoredFact]) -> Decision:
    """`decision` corrected to keep the invariants, whoever took it: a target must be one of
    the active neighbours (else an update or delete becomes an add, and a noop changes
    nothing); adding a fact already held merges it; adding a value to an exclusive attribute
    supersedes the value held."""
    live = {e.key: e for e in existing if e.active}
    if decision.target is not None and decision.target not in live:
        decision = Decision("noop" if decision.action == "noop" else "add", decision.fact)
    if decision.action in {"update", "delete"} and decision.target is None:
        decision = Decision("add", decision.fact)
    if decision.action != "add":
        return decision
    slot = [e for e in live.values() if _same_slot(e.fact, decision.fact)]
    return _slot_rules(decision.fact, slot) or decision


# -- applying ---------------------------------------------------------------------------------

_LOCKS: weakref.WeakKeyDictionary[BaseStore, weakref.WeakValueDictionary[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def namespace_lock(store: BaseStore, namespace: tuple[str, ...]) -> AsyncIterator[None]:
    """Serialise the read-decide-write of one namespace's facts within this process."""
    locks = _LOCKS.setdefault(store, weakref.WeakValueDictionary())
    name = "\x00".join(namespace)
    lock = locks.get(name)
    if lock is None:
        lock = asyncio.Lock()
        locks[name] = lock
    async with lock:
        yield


async def _put(
    store: BaseStore, namespace: tuple[str, ...], key: str, record: dict[str, Any]
) -> None:
    # A retracted fact is kept for its history but has no vector: it can never be recalled.
    index: Literal[False] | None = False if record.get("status") == RETRACTED else None
    await store.aput(namespace, key, record, index=index)


def _written(key: str, record: dict[str, Any]) -> StoredFact:
    return StoredFact(
        key=key,
        fact=fact_of(record),
        status=str(record.get("status") or ACTIVE),
        score=None,
        updated_at=datetime.now(UTC),
        record=record,
    )


async def apply_decisions(
    store: BaseStore,
    namespace: tuple[str, ...],
    decisions: Iterable[tuple[Decision, Sequence[StoredFact]]],
    source: Source,
    *,
    history_limit: int = 20,
) -> list[Outcome]:
    """Carry out each decision (checked by `enforce`) against the neighbours it was taken on.

    The caller holds `namespace_lock`. Facts of one batch see each other's writes: a later
    fact of the same slot supersedes an earlier one. A noop without a target changes nothing.
    """
    outcomes: list[Outcome] = []
    written: dict[str, StoredFact] = {}
    for decision, found in decisions:
        seen = {e.key for e in found}
        existing = [written.get(e.key, e) for e in found]
        existing += [w for k, w in written.items() if k not in seen]
        existing = [e for e in existing if e.active]
        decision = enforce(decision, existing)
        fact = decision.fact
        target = next((e for e in existing if e.key == decision.target), None)
        action: Literal["added", "updated", "merged", "retracted"]
        replaced: str | None = None
        if decision.action == "noop":
            if target is None:
                continue
            key, action, record = target.key, "merged", merged_record(target.record, source)
        elif decision.action == "update" and target is not None:
            key, action = target.key, "updated"
            record = superseding_record(target.record, fact, source, history_limit=history_limit)
            replaced = target.fact.text
        elif decision.action == "delete" and target is not None:
            key, action = target.key, "retracted"
            record = retracted_record(target.record, source, history_limit=history_limit)
            replaced = target.fact.text
        else:
            key, action = fact.slot_key, "added"
            old = await store.aget(namespace, key)
            if old is None:
                record = new_record(fact, source)
            elif stored_fact(old).active and fact_of(old.value).negated == fact.negated:
                action, record = "merged", merged_record(old.value, source)
            else:  # a retracted fact stated again comes back, its history kept
                record = superseding_record(old.value, fact, source, history_limit=history_limit)
        await _put(store, namespace, key, record)
        text = str(replaced or "") if action == "retracted" else str(record["text"])
        outcomes.append(Outcome(action=action, key=key, text=text, replaced=replaced))
        written[key] = _written(key, record)
        if action in {"added", "updated"} and fact.exclusive:
            # The invariant: one current fact per exclusive subject and attribute.
            for other in existing:
                if other.key != key and _same_slot(other.fact, fact) and other.active:
                    gone = retracted_record(other.record, source, history_limit=history_limit)
                    gone["superseded_by"] = key
                    await _put(store, namespace, other.key, gone)
                    written[other.key] = _written(other.key, gone)
    return outcomes


FACT_FIELDS = frozenset({"text", "subject", "attribute", "value", "negated", "exclusive"})
RECORD_FIELDS = frozenset(
    {
        "kind",
        "value_key",
        "status",
        "source",
        "first_seen",
        "mentions",
        "seen",
        "history",
        "last_seen",
        "retracted_at",
        "retracted_by",
        "superseded_by",
    }
)
"""Fields of a fact record the server keeps; a correction may not set them."""


async def correct(
    store: BaseStore,
    namespace: tuple[str, ...],
    key: str,
    fact: Fact,
    source: Source,
    *,
    extra: Mapping[str, Any] | None = None,
    ttl: float | None = None,
    history_limit: int = 20,
) -> Outcome:
    """Set memory `key` to `fact`, as a newer statement: the value it held moves to its history
    and any other current fact of the same exclusive subject and attribute is superseded.
    `extra` fields of the caller's own are kept beside the fact's."""
    async with namespace_lock(store, namespace):
        old = await store.aget(namespace, key)
        action: Literal["added", "updated"] = "added"
        replaced: str | None = None
        if old is None:
            record = new_record(fact, source)
        else:
            record = superseding_record(old.value, fact, source, history_limit=history_limit)
            action, replaced = "updated", str(old.value.get("text") or "") or None
        for name, item in (extra or {}).items():
            if name not in FACT_FIELDS and name not in RECORD_FIELDS:
                record[name] = item
        await store.aput(namespace, key, record, ttl=ttl)
        if fact.exclusive:
            for other in await same_slot(store, namespace, fact):
                if other.key != key:
                    gone = retracted_record(other.record, source, history_limit=history_limit)
                    gone["superseded_by"] = key
                    await _put(store, namespace, other.key, gone)
    return Outcome(action=action, key=key, text=fact.text, replaced=replaced)
