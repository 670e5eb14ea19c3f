"""`widen`: the researcher's second search, by the question's key terms, merged into `sources`."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from nodes.context import AgentContext, context_from
from nodes.offline_model import terms
from nodes.retrieve import public_source, search_knowledge, to_sources
from nodes.state import AgentState, Source, emit, last_user_text


async def widen(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Search again with the question's key terms and merge new passages, renumbered."""
    ctx = context_from(runtime.context)
    question = last_user_text(state)
    found = state.get("sources", [])
    key_terms = " ".join(sorted(terms(question)))
    steps = [
        "Search the knowledge base for the question",
        f"Search again for the key terms: {key_terms or '(none)'}",
        "Answer only from the passages found, citing each one",
    ]
    emit(runtime.stream_writer, "plan", {"steps": steps})
    changes: dict[str, Any] = {"plan": steps}
    if not key_terms or ctx.retrieve_k == 0:
        return changes
    hits, warning = await search_knowledge(ctx, key_terms, k=ctx.retrieve_k)
    seen = {(s["document_id"], s["chunk_index"]) for s in found}
    extra = [
        s
        for s in to_sources(hits, min_score=ctx.min_score, first=len(found) + 1)
        if (s["document_id"], s["chunk_index"]) not in seen
    ]
    merged: list[Source] = [*found, *extra][: ctx.retrieve_k * 2]
    for index, source in enumerate(merged):
        source["n"] = index + 1
    changes["sources"] = merged
    if warning is not None:
        changes["warnings"] = [*state.get("warnings", []), warning]
    if extra:
        emit(runtime.stream_writer, "sources", {"sources": [public_source(s) for s in merged]})
    return changes
