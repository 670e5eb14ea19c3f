"""The LangChain callbacks of a run (server/telemetry/tracing.py `GraphCallbacks`): a node's
duration reaches its metric either way; its span is made only when something receives spans
beyond the metrics (an exporter, a test's processor)."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from server.telemetry import tracing
from server.telemetry.tracing import GraphCallbacks, spans_wanted


def node_count(graph: str, node: str) -> float:
    labels = {"graph": graph, "node": node}
    return REGISTRY.get_sample_value("switchboard_node_duration_seconds_count", labels) or 0.0


def run_node(callbacks: GraphCallbacks, node: str) -> None:
    run_id = uuid.uuid4()
    callbacks.on_chain_start(None, {}, run_id=run_id, metadata={"langgraph_node": node}, name=node)
    assert not callbacks.spans or run_id in callbacks.spans
    callbacks.on_chain_end({}, run_id=run_id)


def test_a_nodes_duration_is_observed_without_a_span_until_spans_are_received(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = tracing._Provider()  # a provider of this test's own
    monkeypatch.setattr(tracing, "_provider", provider)
    provider.add_span_processor(tracing.ContextIds())
    provider.add_span_processor(tracing.SpanMetrics())
    assert not spans_wanted()
    graph = f"g{uuid.uuid4().hex[:6]}"
    parent = trace.INVALID_SPAN
    quiet = GraphCallbacks(graph_id=graph, parent=parent)
    quiet._tracer = provider.get_tracer("test")
    run_node(quiet, "step")
    assert node_count(graph, "step") == 1
    assert quiet.spans == {}
    assert quiet.timed == {}

    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert spans_wanted()
    traced = GraphCallbacks(graph_id=graph, parent=parent)
    traced._tracer = provider.get_tracer("test")
    run_node(traced, "step")
    assert node_count(graph, "step") == 2  # through the span, as before
    assert [span.name for span in exporter.get_finished_spans()] == ["node step"]
