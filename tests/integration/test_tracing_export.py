"""Traces leave the process only when OTEL_EXPORTER_OTLP_ENDPOINT is set: a real
`switchboard serve` exports its spans over OTLP/HTTP to a collector stand-in that records
what it receives (protobuf, decoded with opentelemetry-proto)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import ROOT, SWITCHBOARD, free_port, served_by


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Collector.received
    finally:
        server.shutdown()


def test_spans_are_exported_to_the_otlp_endpoint_with_their_service_and_route(
    database_url: str, tmp_path: Path, collector: tuple[str, list[tuple[str, bytes]]]
) -> None:
    endpoint, received = collector
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path),
        "PORT": str(port),
        "INGEST_SAMPLES_ON_START": "false",
        "LOG_LEVEL": "warning",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "switchboard-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # the SDK's batch delay (ms)
    }
    url = f"http://127.0.0.1:{port}"
    with served_by([str(SWITCHBOARD), "serve"], cwd=ROOT, env=env, log=tmp_path / "serve.log",
                   url=url):  # fmt: skip
        assert httpx.get(f"{url}/info", headers={"X-Request-ID": "otlp-check-1"}).status_code == 200
        deadline = time.monotonic() + 30
        spans: list[Any] = []
        while not any(s.name == "GET /info" for s in spans):
            assert time.monotonic() < deadline, "no span of GET /info reached the collector"
            time.sleep(0.2)
            spans = []
            for path, body in list(received):
                assert path == "/v1/traces"
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    service = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    assert service["service.name"] == "switchboard-under-test"
                    for scope in resource_spans.scope_spans:
                        spans.extend(scope.spans)
    infos = [s for s in spans if s.name == "GET /info"]
    assert len(infos) == 1  # one span per request: FastAPI's own spans are off
    (info,) = infos
    attributes = {a.key: a.value for a in info.attributes}
    assert attributes["request_id"].string_value == "otlp-check-1"
    assert attributes["http.route"].string_value == "/info"
    assert attributes["http.response.status_code"].int_value == 200
