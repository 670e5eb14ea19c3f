"""Long-term memory of a user in the graph's store: namespace `(user_id, "memories")`.

`remember_statement` extracts facts from what the user said, decides each against the most
similar facts held and applies the decisions (`stores.memory.facts`); `/chat`, Agent-API runs
and the `remember` tool all go through it. `recall_memories` selects the few facts relevant
to a question; `forget_memories` deletes the ones matching a description.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from langgraph.store.base import BaseStore, SearchItem

from nodes.context import AgentContext
from nodes.memory_extract import (
    ExtractionError,
    FactExtractor,
    ModelExtractor,
    OfflineExtractor,
    note,
)
from nodes.models import chat_model_for
from nodes.offline_model import OfflineChatModel, terms
from nodes.state import Memory
from stores.memory.facts import (
    ACTIVE_FILTER,
    Fact,
    Outcome,
    Source,
    StoredFact,
    apply_decisions,
    namespace_lock,
    neighbours,
)

log = logging.getLogger(__name__)

MEMORIES = "memories"
MAX_QUERY_CHARS = 2000


def namespace(user_id: str) -> tuple[str, str]:
    """The store namespace of a user's memories (it begins with the user id)."""
    return (user_id, MEMORIES)


@dataclass(frozen=True, slots=True)
class RecallPolicy:
    """How many memories reach the prompt: at most `k`, scoring at least `min_score` and at
    least `relative` times the best match's score (a score is the similarity to the question
    plus `word_bonus` per content word they share, for at most two words); `candidates` are
    fetched from the store to choose from."""

    k: int = 3
    relative: float = 0.85
    min_score: float = 0.37
    word_bonus: float = 0.1
    candidates: int = 10


async def remember_facts(
    store: BaseStore,
    user_id: str,
    facts: Sequence[Fact],
    *,
    extractor: FactExtractor,
    source: Source,
    history_limit: int = 20,
) -> list[Outcome]:
    """Decide `facts` against the user's memories with `extractor` and apply the decisions."""
    if not facts:
        return []
    ns = namespace(user_id)
    async with namespace_lock(store, ns):
        found: list[Sequence[StoredFact]] = [await neighbours(store, ns, fact) for fact in facts]
        candidates = list(zip(facts, found, strict=True))
        decisions = await extractor.decide(candidates)
        return await apply_decisions(
            store,
            ns,
            zip(decisions, found, strict=True),
            source,
            history_limit=history_limit,
        )


async def remember_statement(
    store: BaseStore,
    user_id: str,
    text: str,
    *,
    extractor: FactExtractor,
    source: Source,
    keep_unparsed: bool = False,
    history_limit: int = 20,
) -> list[Outcome]:
    """Extract the facts `text` states about the user and consolidate them into memory.

    With `keep_unparsed` (the `remember` tool: it was asked to remember this), a statement the
    extractor finds no fact in is kept as a free note.
    """
    facts = await extractor.extract(text)
    if not facts and keep_unparsed:
        kept = note(text)
        facts = [kept] if kept is not None else []
    return await remember_facts(
        store, user_id, facts, extractor=extractor, source=source, history_limit=history_limit
    )


# -- recall ----------------------------------------------------------------------------------

_MY_THING = re.compile(r"\bmy\s+([a-z0-9' -]{1,60})", re.IGNORECASE)
_ABOUT_ME = re.compile(r"\b(?:me|my|i|i'm|myself|mine)\b", re.IGNORECASE)
_GENERIC_THING = frozenset({"name", "called", "named", "exactly", "again", "current", "currently"})
_PHRASE_END_TEXT = "is are was were do does did live lives work works like likes called named"
_PHRASE_END = frozenset(_PHRASE_END_TEXT.split()) | {"have", "has", "and", "or", "but", "if"}


def asked_thing(question: str) -> set[str]:
    """The content words of the thing a question asks about ("what is my dog called?" →
    {"dog"}), or an empty set when it asks about no "my <thing>"."""
    match = _MY_THING.search(question[:MAX_QUERY_CHARS])
    if match is None:
        return set()
    words: list[str] = []
    for word in re.findall(r"[a-z0-9']+", match.group(1).lower())[:4]:
        if word in _PHRASE_END:
            break
        words.append(word)
    wanted = terms(" ".join(words))
    specific = wanted - _GENERIC_THING
    return specific or wanted


def _about(item: SearchItem) -> set[str]:
    value = item.value
    return terms(
        " ".join(str(value.get(name) or "") for name in ("text", "attribute", "value", "subject"))
    )


def _attribute_names(item: SearchItem, thing: set[str]) -> bool:
    """Whether the memory's attribute is exactly the thing asked about ("my name" → the
    attribute "name", not "son's name")."""
    attribute = terms(str(item.value.get("attribute") or ""))
    return bool(attribute) and (attribute - _GENERIC_THING or attribute) == thing


def _memory(item: SearchItem) -> Memory:
    return Memory(key=item.key, text=str(item.value.get("text", "")))


def select_memories(
    question: str, items: Sequence[SearchItem], *, policy: RecallPolicy
) -> list[Memory]:
    """The memories (ranked by the store) worth showing for `question`.

    A question about "my <thing>" keeps only the memories that mention every word of the
    thing (so "my sister's name" does not bring up the dog's name), and of those, the ones
    whose attribute is that thing when there are any. Scored memories (a store with
    embeddings) are ranked by similarity plus `word_bonus` per word shared with the question
    (at most two), and those kept score at least `min_score` and `relative` times the best.
    Unscored ones keep those sharing the most words with the question, or, when none shares
    a word with a question about the user, the first `k`.
    """
    items = [item for item in items if item.value.get("text")]
    thing = asked_thing(question)
    if thing:
        items = [item for item in items if thing <= _about(item)]
        named = [item for item in items if _attribute_names(item, thing)]
        items = named or items
    if not items:
        return []
    wanted = terms(question)
    shared = [len(_about(item) & wanted) for item in items]
    if all(item.score is not None for item in items):
        ranked = sorted(
            (
                (float(item.score or 0.0) + policy.word_bonus * min(words, 2), index)
                for index, (item, words) in enumerate(zip(items, shared, strict=True))
            ),
            key=lambda pair: (-pair[0], pair[1]),
        )
        best = ranked[0][0]
        if best < policy.min_score:
            return []
        floor = max(policy.min_score, best * policy.relative)
        return [_memory(items[index]) for score, index in ranked if score >= floor][: policy.k]
    best_shared = max(shared)
    if best_shared == 0:  # without meaning to go by, a question about the user gets the latest
        return [_memory(item) for item in items[: policy.k]] if _ABOUT_ME.search(question) else []
    kept = [item for item, words in zip(items, shared, strict=True) if words == best_shared]
    return [_memory(item) for item in kept[: policy.k]]


_BROAD = re.compile(
    r"\b(?:about me|about myself|know about me|remember about me|have i told you|"
    r"did i tell you|you know of me)\b",
    re.IGNORECASE,
)


def is_broad(question: str) -> bool:
    """Whether `question` asks about the user in general ("what do you know about me?")."""
    text = question[:MAX_QUERY_CHARS]
    return bool(_BROAD.search(text)) and not terms(text)


async def recall_memories(
    store: BaseStore, user_id: str, query: str, *, policy: RecallPolicy | None = None
) -> list[Memory]:
    """The user's memories relevant to `query` (see `select_memories`); for a question about
    the user in general, the most recent ones. Superseded and retracted facts never come back.
    """
    policy = policy or RecallPolicy()
    query = query[:MAX_QUERY_CHARS]
    if not query.strip():
        return []
    if is_broad(query):
        recent = await store.asearch(namespace(user_id), filter=ACTIVE_FILTER, limit=policy.k)
        return [_memory(item) for item in recent if item.value.get("text")]
    items = await store.asearch(
        namespace(user_id), query=query, filter=ACTIVE_FILTER, limit=policy.candidates
    )
    return select_memories(query, items, policy=policy)


async def forget_memories(store: BaseStore, user_id: str, fact: str) -> list[str]:
    """Delete the user's memories that match `fact`; returns the texts deleted."""
    items = await store.asearch(namespace(user_id), limit=1000)
    wanted = terms(fact)
    deleted: list[str] = []
    for item in items:
        text = str(item.value.get("text", ""))
        have = terms(text)
        matches = fact.lower() in text.lower() or (wanted and len(have & wanted) * 2 >= len(wanted))
        if matches:
            await store.adelete(namespace(user_id), item.key)
            deleted.append(text)
    return deleted


def extractor_for(ctx: AgentContext) -> FactExtractor:
    """The agent's extractor: `memory_extractor` "offline", "model", or "auto" (the model when
    the agent's chat model is an OpenAI-compatible one, else offline)."""
    if ctx.memory_extractor == "offline":
        return OfflineExtractor()
    if ctx.memory_extractor == "auto" and ctx.model.provider == "offline" and not ctx.chat_model:
        return OfflineExtractor()
    model = chat_model_for(ctx)
    if isinstance(model, OfflineChatModel):
        return OfflineExtractor()
    return ModelExtractor(model)


async def remember_said(
    store: BaseStore,
    ctx: AgentContext,
    text: str,
    *,
    source: Source,
    keep_unparsed: bool = False,
) -> tuple[list[Outcome], str | None]:
    """`remember_statement` with the agent's extractor; if the model fails, the offline one.

    Returns:
        What was done, and a warning when the model's extraction failed and the offline
        extractor was used instead.
    """
    extractor = extractor_for(ctx)
    warning: str | None = None
    try:
        outcomes = await _remember_with(store, ctx, text, extractor, source, keep_unparsed)
    except ExtractionError as error:
        log.warning("memory extraction by the model failed: %s", error)
        warning = "the model could not extract facts to remember; the offline extractor did"
        offline = OfflineExtractor()
        outcomes = await _remember_with(store, ctx, text, offline, source, keep_unparsed)
    return outcomes, warning


async def _remember_with(
    store: BaseStore,
    ctx: AgentContext,
    text: str,
    extractor: FactExtractor,
    source: Source,
    keep_unparsed: bool,
) -> list[Outcome]:
    return await remember_statement(
        store,
        ctx.user_id,
        text,
        extractor=extractor,
        source=replace(source, extractor=extractor.name),
        keep_unparsed=keep_unparsed,
        history_limit=ctx.memory_history_limit,
    )
