"""`config.configurable` and `context` kept as one, as langgraph-api keeps them: an assistant's
or a run's request may give either (not both); the other is filled in from it (a graph is given
only the context keys its schema declares: `server.runs.schema_context`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stores.errors import InvalidInputError

# langgraph-api's own words (and status, 400) for a request that gives both.
BOTH = (
    "Cannot specify both configurable and context. Prefer setting context alone. Context was "
    "introduced in LangGraph 0.6.0 and is the long term planned replacement for configurable."
)


def mirrored(
    config: Mapping[str, Any] | None, context: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`(config, context)` with `config.configurable` and `context` mirrored: a non-empty
    `configurable` becomes the context, else a non-empty context becomes `configurable`.
    Both non-empty: 400, as langgraph-api refuses it whatever their content. `context` None
    (not given) stays None unless `configurable` fills it."""
    config = dict(config or {})
    configurable = config.get("configurable")
    if configurable and context:
        raise InvalidInputError(BOTH, field="context", status=400)
    if configurable and isinstance(configurable, Mapping):
        return config, dict(configurable)
    if context:
        config["configurable"] = dict(context)
    return config, None if context is None else dict(context)
