"""A local webhook receiver for the tests of run and cron webhooks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records the JSON body of every POST it gets."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                self.send_response(204)
                self.end_headers()
                with receiver._changed:
                    receiver.bodies.append(body)
                    receiver._changed.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, *, timeout: float = 90.0) -> list[dict[str, Any]]:
        """Block until at least `count` bodies arrived; `TimeoutError` otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.bodies) >= count, timeout=timeout):
                raise TimeoutError(f"{len(self.bodies)} webhook call(s) of {count} in {timeout} s")
            return list(self.bodies)


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A running `WebhookReceiver`, shut down on exit."""
    receiver = WebhookReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=5)
