"""Long-term memory of a user in the graph's store: namespace `(user_id, "memories")`."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from langgraph.store.base import BaseStore

from nodes.offline_model import terms
from nodes.state import Memory

MEMORIES = "memories"


def namespace(user_id: str) -> tuple[str, str]:
    """The store namespace of a user's memories (it begins with the user id)."""
    return (user_id, MEMORIES)


def memory_key(fact: str) -> str:
    """A stable key for `fact`, so saying the same thing twice stores it once."""
    normalized = " ".join(fact.lower().split()).rstrip(".!")
    return hashlib.sha256(normalized.encode()).hexdigest()[:32]


async def save_memory(store: BaseStore, user_id: str, fact: str, *, origin: str) -> str:
    """Store `fact` about the user; returns its key."""
    key = memory_key(fact)
    await store.aput(
        namespace(user_id),
        key,
        {"text": fact.strip(), "origin": origin, "created_at": datetime.now(UTC).isoformat()},
    )
    return key


async def recall_memories(
    store: BaseStore, user_id: str, query: str, *, limit: int
) -> list[Memory]:
    """Up to `limit` memories of the user, the ones sharing words with `query` first."""
    items = await store.asearch(namespace(user_id), query=query or None, limit=limit * 2)
    wanted = terms(query)
    memories = [
        Memory(key=item.key, text=str(item.value.get("text", "")))
        for item in items
        if item.value.get("text")
    ]
    memories.sort(key=lambda m: -len(terms(m["text"]) & wanted))
    return memories[:limit]


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
