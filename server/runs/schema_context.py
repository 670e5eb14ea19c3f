"""The context a graph is given: only the keys its context schema declares, as langgraph-api
passes it (a dataclass schema refuses others, such as a client's mirrored `configurable`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_DECLARED: dict[Any, frozenset[str] | None] = {}

CONTEXT_GIVEN = "__context_provided__"
"""The mark of a run's `configurable` mirrored from the context its client gave (langgraph-api's
own, which a run's kwargs show there too); taken out before the graph sees its config."""


def declared_keys(graph: Any) -> frozenset[str] | None:
    """The context keys `graph`'s context schema declares (the properties of its JSON schema,
    as langgraph-api reads them); None when it has no schema, or one without properties (then
    the whole context is passed). Kept per schema type: building the schema is not free."""
    schema_type = getattr(graph, "context_schema", None)
    if schema_type is None:
        return None
    try:
        if schema_type in _DECLARED:
            return _DECLARED[schema_type]
    except TypeError:  # an unhashable schema: not kept
        pass
    try:
        schema = graph.get_context_jsonschema()
    except Exception:  # langgraph-api passes the context unfiltered when it cannot tell
        schema = None
    properties = (schema or {}).get("properties") or {}
    keys = frozenset(properties) if properties else None
    try:
        if len(_DECLARED) < 256:
            _DECLARED[schema_type] = keys
    except TypeError:
        pass
    return keys


def schema_context(graph: Any, context: Mapping[str, Any] | None) -> Any:
    """The context `graph` is given: only the keys its context schema declares."""
    if not context:
        return context
    keys = declared_keys(graph)
    if keys is None:
        return context
    return {key: value for key, value in context.items() if key in keys}


def drop_undeclared(
    configurable: dict[str, Any], context: Mapping[str, Any], kept: Mapping[str, Any]
) -> None:
    """As langgraph-api, for a run whose client gave its context: the keys the graph's context
    schema dropped leave the run's (mirrored) `configurable` too, where they still hold the
    context's value. A run given `configurable` keeps all of it there."""
    for key in context.keys() - kept.keys():
        if configurable.get(key) == context[key]:
            configurable.pop(key, None)
