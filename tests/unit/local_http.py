"""Real HTTP(S) servers on loopback addresses for the outbound tests: each records what reaches
it (method, path, headers, body, TLS server name) and answers as its test says."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, dict[str, str], bytes]
Answer = Callable[[Seen], Reply]


def ok(_: Seen) -> Reply:
    """Answer 200 with a short text."""
    return 200, {"Content-Type": "text/plain; charset=utf-8"}, b"hello from the local server"


@dataclass
class LocalServer:
    """A threaded HTTP server on `host` that records requests and replies with `answer`."""

    host: str
    answer: Answer = ok
    port: int = 0
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        local = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                local.seen.append(seen)
                status, headers, body = local.answer(seen)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def log_message(self, format: str, *args: Any) -> None:
                return

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                return  # failed TLS handshakes are what some tests expect

        self.server = Server((self.host, self.port), Handler)
        self.port = int(self.server.server_address[1])
        if self.tls is not None:

            def record_name(_: Any, name: str | None, __: Any) -> None:
                self.server_names.append(name)

            self.tls.sni_callback = record_name
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)

    @property
    def base(self) -> str:
        """`scheme://host:port` of the server, by address."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


@contextlib.contextmanager
def serving(*servers: LocalServer) -> Iterator[None]:
    """Run `servers` in threads until the block ends, then stop them (blocked answers are
    released first)."""
    threads = [threading.Thread(target=s.server.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for local in servers:
            local.release.set()
            local.server.shutdown()
            local.server.server_close()
        for thread in threads:
            thread.join(timeout=5)


def twin_servers(answer: Answer = ok) -> tuple[LocalServer, LocalServer]:
    """Two servers on the same port, one on 127.0.0.2 and one on 127.0.0.1: a request shows,
    by which one it reached, which address the client connected to."""
    for _ in range(50):
        other = LocalServer("127.0.0.2", answer)
        try:
            loopback = LocalServer("127.0.0.1", answer, port=other.port)
        except OSError:  # that port is taken on 127.0.0.1: try another
            other.server.server_close()
            continue
        return other, loopback
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")
