"""A small OpenAI-compatible HTTP server (`/v1/chat/completions`, streaming and tool calls)."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support import free_port

_ARITHMETIC = re.compile(r"\d[\d\s+\-*/().]*\d")


def _reply(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """What the fake model says: a calculator call for arithmetic, else text."""
    messages = body["messages"]
    last = messages[-1]
    tools = {t["function"]["name"] for t in body.get("tools", [])}
    if last["role"] == "user" and "calculator" in tools:
        match = _ARITHMETIC.search(str(last["content"]))
        if match:
            call = {
                "id": f"call_{uuid.uuid4().hex[:10]}",
                "type": "function",
                "function": {
                    "name": "calculator",
                    "arguments": json.dumps({"expression": match.group(0).strip()}),
                },
            }
            return "", [call]
    if last["role"] == "tool":
        return f"The calculator says {last['content']}.", []
    system = str(messages[0]["content"]) if messages[0]["role"] == "system" else ""
    cited = " [1]" if "[1]" in system else ""
    return f"Hello from the fake model{cited}.", []


class FakeOpenAI:
    """The app and the requests it received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self.complete, methods=["POST"])]
        )

    async def complete(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        content, calls = _reply(body)
        model = body.get("model", "fake")
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": content or None}
            if calls:
                message["tool_calls"] = calls
            return JSONResponse(
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:8]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            self._chunks(model, content, calls, finish, usage if include_usage else None),
            media_type="text/event-stream",
        )

    async def _chunks(
        self,
        model: str,
        content: str,
        calls: list[dict[str, Any]],
        finish: str,
        usage: dict[str, int] | None,
    ) -> AsyncIterator[bytes]:
        ident = f"chatcmpl-{uuid.uuid4().hex[:8]}"

        def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
            payload = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
            }
            return f"data: {json.dumps(payload)}\n\n".encode()

        yield chunk({"role": "assistant", "content": ""})
        for index, call in enumerate(calls):
            yield chunk({"tool_calls": [{"index": index, **call}]})
        for word in re.findall(r"\S+\s*", content):
            yield chunk({"content": word})
        yield chunk({}, finish)
        if usage is not None:
            tail = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": model, "choices": [], "usage": usage}  # fmt: skip
            yield f"data: {json.dumps(tail)}\n\n".encode()
        yield b"data: [DONE]\n\n"


@contextmanager
def running_fake_openai() -> Iterator[tuple[str, FakeOpenAI]]:
    """Serve a `FakeOpenAI` on a free port; yields its `/v1` base URL and the fake."""
    fake = FakeOpenAI()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="fake-openai", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("the fake OpenAI server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1", fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
