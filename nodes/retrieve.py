"""`retrieve`: search the agent's collections for passages about the user's message."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from langgraph.runtime import Runtime

from nodes.context import AgentContext, SearchHitLike, context_from
from nodes.state import AgentState, Source, changed, emit, last_user_text

log = logging.getLogger(__name__)

SNIPPET_CHARS = 300


def to_sources(hits: Sequence[SearchHitLike], *, min_score: float, first: int = 1) -> list[Source]:
    """Hits at or above `min_score` as numbered sources, starting at `[first]`."""
    kept = [hit for hit in hits if hit.score >= min_score]
    return [
        Source(
            n=first + i,
            document_id=str(hit.document_id),
            chunk_index=int(hit.chunk_index),
            collection=hit.collection,
            source=hit.source,
            doc_type=hit.doc_type,
            title=hit.title,
            text=hit.text,
            score=round(float(hit.score), 4),
        )
        for i, hit in enumerate(kept)
    ]


def public_source(source: Source) -> dict[str, Any]:
    """A source as it is streamed and stored: the chunk's text cut to a snippet."""
    out: dict[str, Any] = {k: v for k, v in source.items() if k != "text"}
    out["snippet"] = " ".join(source["text"].split())[:SNIPPET_CHARS]
    return out


async def search_knowledge(
    ctx: AgentContext, query: str, *, k: int
) -> tuple[list[SearchHitLike], str | None]:
    """Hits for `query` in the agent's collections, and a warning if the search failed."""
    if ctx.knowledge is None:
        return [], "the knowledge base is not available in this deployment"
    try:
        hits = await asyncio.wait_for(
            ctx.knowledge.search(query, k=k, collections=list(ctx.collections) or None),
            timeout=ctx.tool_timeout_s,
        )
    except Exception as error:  # an outage degrades the answer, never fails the run
        log.warning("knowledge search failed: %r", error)
        return [], f"I could not consult the knowledge base ({type(error).__name__})"
    return list(hits), None


async def retrieve(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Put the passages relevant to the new message in `sources` and stream them.

    It runs beside `recall` (the same step), so it writes only its own keys: `sources` and
    `search_warnings` (both every turn). Both embed the same message: the embedder computes
    its vector once for the two (`stores.embeddings.SharedEmbeddings`)."""
    ctx = context_from(runtime.context)
    question = last_user_text(state)
    if not question.strip() or ctx.retrieve_k == 0:
        return changed(state, {"sources": [], "search_warnings": []})
    hits, warning = await search_knowledge(ctx, question, k=ctx.retrieve_k)
    sources = to_sources(hits, min_score=ctx.min_score)
    changes: dict[str, Any] = {"sources": sources, "search_warnings": []}
    if warning is not None:
        emit(runtime.stream_writer, "warning", {"node": "retrieve", "message": warning})
        changes["search_warnings"] = [warning]
    emit(runtime.stream_writer, "sources", {"sources": [public_source(s) for s in sources]})
    return changed(state, changes)
