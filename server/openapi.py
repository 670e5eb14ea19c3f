"""The OpenAPI document, completed with what only the served project knows (its graph ids)
and the shared schema of stored JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI

from server.schemas.common import (
    STORED_JSON,
    STORED_JSON_SCHEMA,
    STORED_MARK,
    STREAM_ONLY,
    stored_json_schema,
)

# Bodies whose `graph_id` must name a graph of langgraph.json (else 422).
GRAPH_ID_BODIES = ("AssistantCreate", "AssistantUpdate", "AgentCreate", "AgentUpdate")


def _name_graphs(prop: dict[str, Any], graph_ids: list[str]) -> None:
    for option in prop.get("anyOf", [prop]):
        if option.get("type") == "string":
            option["enum"] = graph_ids


def _refer_stored_json(node: Any) -> Any:
    if isinstance(node, dict):
        if STORED_MARK in node:
            return stored_json_schema(node)
        return {key: _refer_stored_json(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_refer_stored_json(item) for item in node]
    return node


def _binary_uploads(schemas: dict[str, Any]) -> None:
    # OpenAPI 3.1 says a file part is `contentMediaType`; generators and older tools read
    # `format: binary` (3.0's way), which 3.1 still allows.
    for schema in schemas.values():
        for prop in schema.get("properties", {}).values():
            if prop.get("contentMediaType") == "application/octet-stream":
                prop["format"] = "binary"


def _stream_only_answers(paths: dict[str, Any]) -> None:
    # FastAPI documents every 200 as JSON too; a stream's 200 is only `text/event-stream`.
    for operations in paths.values():
        for operation in operations.values():
            ok = operation.get("responses", {}).get("200", {})
            if ok.pop(STREAM_ONLY, False):
                ok.get("content", {}).pop("application/json", None)


def declare_graph_ids(app: FastAPI, graph_ids: Sequence[str]) -> None:
    """Make `app`'s /openapi.json list the declared graphs as the values `graph_id` takes,
    and hold the `StoredJson` schema the stored fields refer to."""
    build = app.openapi
    ids = sorted(graph_ids)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document: dict[str, Any] = _refer_stored_json(build())
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas[STORED_JSON] = STORED_JSON_SCHEMA
        _binary_uploads(schemas)
        _stream_only_answers(document.get("paths", {}))
        for name in GRAPH_ID_BODIES:
            prop = schemas.get(name, {}).get("properties", {}).get("graph_id")
            if prop is not None:
                _name_graphs(prop, ids)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
