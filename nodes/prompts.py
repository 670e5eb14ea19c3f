"""Prompt text: the system message that carries memories, sources and warnings to the model."""

from __future__ import annotations

from collections.abc import Sequence

from nodes.state import Memory, Source

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Use the tools you are given when they help. Answer from the "
    "sources and memories below, cite each source you use as [n], and say plainly when you "
    "have nothing to go on instead of guessing."
)

SUMMARY_HEADER = "Summary of the earlier conversation:"
MEMORIES_HEADER = "What you remember about the user:"
SOURCES_HEADER = "Sources (cite as [n]):"
WARNINGS_HEADER = "Warnings:"
SECTION_HEADERS = (SUMMARY_HEADER, MEMORIES_HEADER, SOURCES_HEADER, WARNINGS_HEADER)


def system_text(
    *,
    system_prompt: str,
    summary: str,
    memories: Sequence[Memory],
    sources: Sequence[Source],
    warnings: Sequence[str],
) -> str:
    """The system message of a model call, one titled section per kind of context."""
    parts = [system_prompt.strip() or DEFAULT_SYSTEM_PROMPT]
    if summary:
        parts.append(f"{SUMMARY_HEADER}\n{summary}")
    if memories:
        parts.append(MEMORIES_HEADER + "\n" + "\n".join(f"- {m['text']}" for m in memories))
    if sources:
        blocks = [
            f"[{s['n']}] {s['title'] or s['source']} ({s['source']})\n{_one_line(s['text'])}"
            for s in sources
        ]
        parts.append(SOURCES_HEADER + "\n" + "\n".join(blocks))
    if warnings:
        parts.append(WARNINGS_HEADER + "\n" + "\n".join(f"- {w}" for w in warnings))
    return "\n\n".join(parts)


def _one_line(text: str) -> str:
    return " ".join(text.split())
