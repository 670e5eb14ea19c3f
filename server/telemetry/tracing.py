"""OpenTelemetry tracing: the tracer provider (an OTLP exporter when OTEL_EXPORTER_OTLP_ENDPOINT
is set, nothing exported otherwise), the processors that stamp each span with the context's
request, run and thread ids and turn span durations into metrics, and the LangChain callback
handler that opens a span per graph node, model call, tool call and retriever of a run."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Status, StatusCode

from server.telemetry.context import ids
from server.telemetry.metrics import metrics
from stores.tracing import KIND, observe_without_spans, traced

log = logging.getLogger(__name__)

__all__ = ["GraphCallbacks", "install_tracing", "traced"]

_lock = threading.Lock()
_provider: TracerProvider | None = None
_exporting_to: set[str] = set()


class ContextIds(SpanProcessor):
    """Stamp every span, when it starts, with the ids of its context (`request_id`, `run_id`,
    `thread_id`)."""

    def on_start(self, span: SdkSpan, parent_context: otel_context.Context | None = None) -> None:
        for name, value in ids().items():
            span.set_attribute(name, value)


def _status(span: ReadableSpan) -> str:
    return "error" if span.status.status_code is StatusCode.ERROR else "ok"


class SpanMetrics(SpanProcessor):
    """Observe the duration of each finished span of a known kind in its histogram, so the
    code that makes a span gets its metric too."""

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes
        if not attributes or span.start_time is None or span.end_time is None:
            return
        seconds = max(0.0, (span.end_time - span.start_time) / 1e9)
        observe_span(attributes, seconds, _status(span))


def observe_span(attributes: Mapping[str, Any], seconds: float, status: str) -> None:
    """The metric of a span of a known kind (`switchboard.kind`) that took `seconds`: what
    `SpanMetrics` observes of a span, and `traced` of a block it timed without one."""
    kind = attributes.get(KIND)
    if kind is None:
        return

    def label(key: str, default: str = "") -> str:
        value = attributes.get(key)
        return default if value is None else str(value)

    m = metrics()
    if kind in _CALLBACK_KINDS:
        _observe(attributes, seconds, status)
    elif kind == "embedding":
        m.embedding.labels(label("embedding.kind")).observe(seconds)
    elif kind == "memory":
        m.memory_op.labels(label("memory.op"), status).observe(seconds)
    elif kind == "checkpoint":
        m.checkpoint_write.labels(label("checkpoint.op")).observe(seconds)


_CALLBACK_KINDS = frozenset({"model", "tool", "retrieval", "node"})


def _observe(attributes: Mapping[str, Any], seconds: float, status: str) -> None:
    """The metric of a node, model, tool or retrieval that took `seconds` (from its span's
    attributes, or from what `GraphCallbacks` would have put on its span)."""

    def label(key: str, default: str = "") -> str:
        value = attributes.get(key)
        return default if value is None else str(value)

    m = metrics()
    kind = attributes.get(KIND)
    if kind == "model":
        m.model_call.labels(label("model", "unknown"), status).observe(seconds)
    elif kind == "tool":
        m.tool_call.labels(label("tool"), status).observe(seconds)
    elif kind == "retrieval":
        m.retrieval.labels(status).observe(seconds)
    elif kind == "node":
        m.node_duration.labels(label("graph_id"), label("node")).observe(seconds)


class _Provider(TracerProvider):
    """The server's tracer provider, which knows whether anything receives its spans beyond
    its own processors (`ContextIds`, `SpanMetrics`): an exporter, or a test's processor."""

    exporting = False

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        if not isinstance(span_processor, ContextIds | SpanMetrics):
            self.exporting = True


def spans_wanted() -> bool:
    """Whether spans are received by anything but the metrics: an exporter, a test's processor,
    a provider set up by someone else."""
    provider = _provider
    return not isinstance(provider, _Provider) or provider.exporting


def install_tracing(*, service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    """The process's tracer provider, set up once (an SDK provider set before is reused):
    spans are made only while something receives them (`spans_wanted`); until then requests,
    runs, a run's nodes and calls (`GraphCallbacks`) and the stores' blocks (`traced`) are
    timed without spans and observed in the same metrics. They are exported only to
    `otlp_endpoint` (OTLP over HTTP) when given. Tests add their own exporters to it."""
    global _provider
    with _lock:
        if _provider is None:
            current = trace.get_tracer_provider()
            if isinstance(current, TracerProvider):
                _provider = current
            else:
                _provider = _Provider(resource=Resource.create({"service.name": service_name}))
                trace.set_tracer_provider(_provider)
            _provider.add_span_processor(ContextIds())
            _provider.add_span_processor(SpanMetrics())
            # The stores' spans too are made only for a receiver; else timed and observed.
            observe_without_spans(spans_wanted, observe_span)
        if otlp_endpoint and otlp_endpoint not in _exporting_to:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = otlp_endpoint.rstrip("/")
            if not endpoint.endswith("/v1/traces"):
                endpoint += "/v1/traces"  # the base URL, as OTEL_EXPORTER_OTLP_ENDPOINT means it
            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
            _exporting_to.add(otlp_endpoint)
            log.info("exporting traces to %s", endpoint)
        return _provider


@contextmanager
def run_span(*, run_id: str, thread_id: str | None, graph_id: str, attempt: int) -> Iterator[Span]:
    """The span of one run attempt, current inside (its nodes and calls are its children)."""
    with traced(
        "run", f"run {graph_id}", run_id=run_id, graph_id=graph_id, **{"run.attempt": attempt}
    ) as span:
        if thread_id is not None:
            span.set_attribute("thread_id", thread_id)
        yield span


class GraphCallbacks(BaseCallbackHandler):
    """LangChain callbacks of one run that open a span per graph node, chat model call, tool
    call and retriever call (children of the run's span, models and tools under their node).

    Called inline (no thread hop); each callback does a dictionary update and a span start or
    end. When nothing but the metrics would receive those spans (`spans_wanted`: no exporter),
    it times them itself and observes the same metrics, without the spans (~50 µs of CPU
    each, ~0.5 ms per run of the bench's graph).
    """

    run_inline = True
    raise_error = False

    def __init__(self, *, graph_id: str, parent: Span) -> None:
        self.graph_id = graph_id
        self.parent = parent
        self.parents: dict[uuid.UUID, uuid.UUID | None] = {}
        self.spans: dict[uuid.UUID, Span] = {}
        self._tracer = trace.get_tracer("switchboard")
        self.spanning = spans_wanted()
        self.timed: dict[uuid.UUID, tuple[float, Mapping[str, Any]]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> GraphCallbacks:
        """Itself: a copied config (a graph factory's) still reports to this run's spans."""
        return self

    def _parent_span(self, parent_run_id: uuid.UUID | None) -> Span:
        seen = 0
        while parent_run_id is not None and seen < 64:
            span = self.spans.get(parent_run_id)
            if span is not None:
                return span
            parent_run_id = self.parents.get(parent_run_id)
            seen += 1
        return self.parent

    def _start(
        self,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None,
        name: str,
        attributes: Mapping[str, Any],
    ) -> None:
        if not self.spanning:
            self.timed[run_id] = (time.perf_counter(), attributes)
            return
        ctx = trace.set_span_in_context(self._parent_span(parent_run_id))
        span = self._tracer.start_span(name, context=ctx, attributes=dict(attributes))
        self.spans[run_id] = span

    def _end(self, run_id: uuid.UUID, error: BaseException | None = None) -> None:
        self.parents.pop(run_id, None)
        timed = self.timed.pop(run_id, None)
        if timed is not None:
            began, attributes = timed
            seconds = max(0.0, time.perf_counter() - began)
            _observe(attributes, seconds, "ok" if error is None else "error")
            return
        span = self.spans.pop(run_id, None)
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    # -- chains: the graph's nodes ----------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.parents[run_id] = parent_run_id
        node = (metadata or {}).get("langgraph_node")
        name = kwargs.get("name")
        if node and name == node and not str(node).startswith("__"):
            self._start(
                run_id,
                parent_run_id,
                f"node {node}",
                {KIND: "node", "node": str(node), "graph_id": self.graph_id},
            )

    def on_chain_end(self, outputs: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        # A node that interrupts raises GraphInterrupt: a pause, not a failure.
        self._end(run_id, None if type(error).__name__ == "GraphInterrupt" else error)

    # -- chat models -----------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        meta = metadata or {}
        params = invocation_params or {}
        model = str(
            meta.get("ls_model_name") or params.get("model") or params.get("model_name")
            or params.get("_type") or "unknown"
        )  # fmt: skip
        self._start(run_id, parent_run_id, f"chat {model}", {KIND: "model", "model": model})

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        model = str((metadata or {}).get("ls_model_name") or "unknown")
        self._start(run_id, parent_run_id, f"llm {model}", {KIND: "model", "model": model})

    def on_llm_end(self, response: LLMResult, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        span = self.spans.get(run_id)
        usage = (response.llm_output or {}).get("token_usage") if span is not None else None
        if span is not None and isinstance(usage, Mapping):
            for key in ("prompt_tokens", "completion_tokens"):
                if isinstance(usage.get(key), int):
                    span.set_attribute(f"llm.usage.{key}", usage[key])
        self._end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    # -- tools and retrievers (LangChain's: the repo's own nodes time theirs) --------------

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> None:
        name = str(kwargs.get("name") or (serialized or {}).get("name") or "tool")
        self._start(run_id, parent_run_id, f"tool {name}", {KIND: "tool", "tool": name})

    def on_tool_end(self, output: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, parent_run_id, "retrieval", {KIND: "retrieval"})

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: uuid.UUID, **kw: Any) -> None:
        self._end(run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    def close(self) -> None:
        """End the spans left open (a run cancelled mid-node)."""
        for run_id in [*self.spans, *self.timed]:
            self._end(run_id)
        self.parents.clear()
