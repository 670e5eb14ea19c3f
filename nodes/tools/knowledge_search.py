"""The `knowledge_search` tool: search the agent's document collections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodes.tools.registry import ToolEnv, ToolError, ToolSpec


async def _knowledge_search(args: Mapping[str, Any], env: ToolEnv) -> str:
    knowledge = env.context.knowledge
    if knowledge is None:
        raise ToolError("the knowledge base is not available in this deployment")
    collections = [str(args["collection"])] if args.get("collection") else None
    hits = await knowledge.search(
        str(args["query"]),
        k=int(args.get("k", 4)),
        collections=collections or (list(env.context.collections) or None),
        doc_type=args.get("doc_type"),
        dedup=bool(args.get("dedup", False)),
    )
    if not hits:
        return "no matching documents"
    return "\n".join(
        f"- {hit.title or hit.source} ({hit.source}, score {hit.score:.2f}): "
        f"{' '.join(hit.text.split())[:600]}"
        for hit in hits
    )


KNOWLEDGE_SEARCH = ToolSpec(
    name="knowledge_search",
    description="Search the knowledge base (ingested documents) for passages about a query.",
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look for.", "maxLength": 2000},
            "k": {
                "type": "integer",
                "description": "How many passages (1-10).",
                "enum": list(range(1, 11)),
            },
            "collection": {
                "type": "string",
                "description": "Only this collection.",
                "maxLength": 100,
            },
            "doc_type": {
                "type": "string",
                "description": "Only this document type.",
                "maxLength": 20,
            },
            "dedup": {
                "type": "boolean",
                "description": "At most one passage per document (the best one).",
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    run=_knowledge_search,
)
