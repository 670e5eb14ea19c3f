"""The OpenAPI document, completed with what only the served project knows (its graph ids)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI

# Bodies whose `graph_id` must name a graph of langgraph.json (else 422).
GRAPH_ID_BODIES = ("AssistantCreate", "AssistantUpdate", "AgentCreate", "AgentUpdate")


def _name_graphs(prop: dict[str, Any], graph_ids: list[str]) -> None:
    for option in prop.get("anyOf", [prop]):
        if option.get("type") == "string":
            option["enum"] = graph_ids


def declare_graph_ids(app: FastAPI, graph_ids: Sequence[str]) -> None:
    """Make `app`'s /openapi.json list the declared graphs as the values `graph_id` takes."""
    build = app.openapi
    ids = sorted(graph_ids)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schemas = document.get("components", {}).get("schemas", {})
        for name in GRAPH_ID_BODIES:
            prop = schemas.get(name, {}).get("properties", {}).get("graph_id")
            if prop is not None:
                _name_graphs(prop, ids)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
