"""A small OpenAI-compatible HTTP server (`/v1/chat/completions`: streaming, tool calls, and
structured output as langchain-openai asks for it with `response_format` json_schema)."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nodes.memory_extract import fact_from_json, fact_json, parse_statements
from nodes.prompts import MEMORIES_HEADER
from server.settings import Settings
from stores.memory.facts import StoredFact, decide
from tests.support import free_port, make_settings

_ARITHMETIC = re.compile(r"\d[\d\s+\-*/().]*\d")


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content blocks
        return "".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return str(content)


def _extracted(text: str) -> dict[str, Any]:
    """An `ExtractedFacts` answer: the facts the project's first-person grammar reads."""
    return {"facts": [fact_json(fact) for fact in parse_statements(text)]}


def _decided(payload: dict[str, Any]) -> dict[str, Any]:
    """A `MemoryDecisions` answer: the project's offline rules applied to the listed facts."""
    decisions = []
    for new in payload["new_facts"]:
        held = [
            StoredFact(
                key=memory["id"],
                fact=fact_from_json(memory),
                status="active",
                score=memory["similarity"],
                updated_at=datetime.fromisoformat(memory["updated_at"]),
                record={},
            )
            for memory in new["existing_memories"]
        ]
        decision = decide(fact_from_json(new), held)
        decisions.append(
            {"fact_id": new["id"], "action": decision.action, "target": decision.target}
        )
    return {"decisions": decisions}


def _recited(system: str) -> str | None:
    """The answer of a model that repeats every memory it was given (the worst case for
    recall: whatever unrelated memory reaches the prompt reaches the answer)."""
    if MEMORIES_HEADER not in system:
        return None
    section = system.split(MEMORIES_HEADER, 1)[1].split("\n\n", 1)[0]
    lines = [line[2:].strip() for line in section.splitlines() if line.startswith("- ")]
    return "You told me: " + "; ".join(lines) + "." if lines else None


def _reply(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """What the fake model says: a calculator call for arithmetic, structured output through
    the project's own grammar and rules, else text (reciting the memories it was given)."""
    messages = body["messages"]
    last = messages[-1]
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        name = response_format["json_schema"]["name"]
        if name == "ExtractedFacts":
            return json.dumps(_extracted(_text(last))), []
        if name == "MemoryDecisions":
            return json.dumps(_decided(json.loads(_text(last)))), []
        raise ValueError(f"the fake model cannot answer the structured output {name!r}")
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
    system = _text(messages[0]) if messages[0]["role"] == "system" else ""
    recited = _recited(system)
    if recited is not None:
        return recited, []
    cited = " [1]" if "[1]" in system else ""
    return f"Hello from the fake model{cited}.", []


class FakeOpenAI:
    """The app and the requests it received.

    `scripted` holds answers to give, in order, to structured-output requests of a schema
    name (e.g. `{"MemoryDecisions": [{"decisions": [...]}]}`), before the default ones.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.scripted: dict[str, list[dict[str, Any]]] = {}
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self.complete, methods=["POST"])]
        )

    async def complete(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        queued = self.scripted.get(name or "")
        calls: list[dict[str, Any]] = []
        if queued:
            content = json.dumps(queued.pop(0))
        else:
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


def settings_for(database_url: str, data_dir: Path, base_url: str) -> Settings:
    """Test-server settings whose OpenAI-compatible endpoint is the fake at `base_url`."""
    return make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        openai_base_url=base_url,
        openai_api_key="sk-test",
        llm_max_retries=0,
    )


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
