"""`config.configurable` and `context` kept as one, as langgraph-api keeps them: an assistant's,
a run's or a cron's request may give either (not both); the other is filled in from it (a graph
is given only the context keys its schema declares: `server.runs.schema_context`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.runs.schema_context import CONTEXT_GIVEN
from stores.errors import InvalidInputError

# langgraph-api's own words (and status, 400) for a request that gives both.
BOTH = (
    "Cannot specify both configurable and context. Prefer setting context alone. Context was "
    "introduced in LangGraph 0.6.0 and is the long term planned replacement for configurable."
)


def refuse_both(config: Mapping[str, Any] | None, context: Mapping[str, Any] | None) -> None:
    """A 400 naming `context` (langgraph-api's words) when both `config.configurable` and
    `context` are non-empty, whatever their content."""
    if context and (config or {}).get("configurable"):
        raise InvalidInputError(BOTH, field="context", status=400)


def mirrored(
    config: Mapping[str, Any] | None, context: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`(config, context)` with `config.configurable` and `context` mirrored: a non-empty
    `configurable` becomes the context, else a non-empty context becomes `configurable`.
    Both non-empty: 400, as langgraph-api refuses it whatever their content. `context` None
    (not given) stays None unless `configurable` fills it."""
    config = dict(config or {})
    configurable = config.get("configurable")
    refuse_both(config, context)
    if configurable and isinstance(configurable, Mapping):
        return config, dict(configurable)
    if context:
        config["configurable"] = dict(context)
    return config, None if context is None else dict(context)


def run_mirrored(
    config: Mapping[str, Any] | None, context: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`mirrored` for a run's request (a client's or a cron's firing): a `configurable`
    mirrored from a given context is marked `CONTEXT_GIVEN`, as langgraph-api marks it: when
    the run starts, the keys the graph's context schema drops leave it too."""
    config, context_out = mirrored(config, context)
    if context:
        config["configurable"][CONTEXT_GIVEN] = True
    return config, context_out
