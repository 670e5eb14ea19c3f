"""Spans around the work the stores and nodes do (OpenTelemetry API only: without a configured
SDK they cost nothing; the server installs one, which also turns their durations into metrics).

While nothing but those metrics would receive the spans (no exporter: `observe_without_spans`),
a block is timed without a span and its duration observed directly, as the server's request and
run spans are: a span nobody reads cost ~50-80 µs of CPU on the event loop (its start, the context
switch, its processors), ~8 of them a /chat turn."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

KIND = "switchboard.kind"
"""The attribute naming what a span times (model, tool, embedding, retrieval, memory,
checkpoint, node, run, http): the server's span-to-metric processor keys on it."""

_tracer = trace.get_tracer("switchboard")

Observer = Callable[[Mapping[str, Any], float, str], None]
"""`(attributes, seconds, status)` of a block timed without a span ("ok" or "error")."""

_spans_wanted: Callable[[], bool] | None = None
_observe: Observer | None = None


def observe_without_spans(wanted: Callable[[], bool] | None, observe: Observer | None) -> None:
    """While `wanted()` is false, `traced` times its block without a span and hands its
    attributes, duration and status to `observe` (what the span's metrics processor would have
    read); None, None: always spans, as without a server."""
    global _spans_wanted, _observe
    _spans_wanted, _observe = wanted, observe


class TimedSpan(NonRecordingSpan):
    """The span `traced` yields when no span is made: it keeps the attributes and the status
    its block sets (the metrics read them), and records nothing else."""

    def __init__(self, attributes: dict[str, Any]) -> None:
        super().__init__(trace.INVALID_SPAN_CONTEXT)
        self.attributes = attributes
        self.failed = False

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.attributes.update(attributes)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        code = status.status_code if isinstance(status, Status) else status
        self.failed = code is StatusCode.ERROR


@contextmanager
def traced(kind: str, name: str, **attributes: AttributeValue) -> Iterator[Span]:
    """A span named `name` of `kind` around the block, current inside it (so spans started
    within are its children); an exception marks it as an error and is re-raised. Without a
    receiver for spans (`observe_without_spans`), the block is timed instead and observed."""
    wanted, observe = _spans_wanted, _observe
    if observe is None or wanted is None or wanted():
        with _tracer.start_as_current_span(name, attributes={KIND: kind, **attributes}) as span:
            yield span
        return
    timed = TimedSpan({KIND: kind, **attributes})
    started = time.perf_counter()
    try:
        yield timed
    except Exception:  # as a span does: an Exception (not a cancellation) is an error
        timed.failed = True
        raise
    finally:
        observe(timed.attributes, time.perf_counter() - started, "error" if timed.failed else "ok")
