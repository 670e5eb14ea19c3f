"""Spans around the work the stores and nodes do (OpenTelemetry API only: without a configured
SDK they cost nothing; the server installs one, which also turns their durations into metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

KIND = "switchboard.kind"
"""The attribute naming what a span times (model, tool, embedding, retrieval, memory,
checkpoint, node, run, http): the server's span-to-metric processor keys on it."""

_tracer = trace.get_tracer("switchboard")


@contextmanager
def traced(kind: str, name: str, **attributes: AttributeValue) -> Iterator[Span]:
    """A span named `name` of `kind` around the block, current inside it (so spans started
    within are its children); an exception marks it as an error and is re-raised."""
    with _tracer.start_as_current_span(name, attributes={KIND: kind, **attributes}) as span:
        yield span
