"""A2A at /a2a/{assistant_id} (server/protocols/a2a.py), driven by `a2a-sdk`'s client over HTTP.

Both protocol versions are exercised: v0.3 (`message/send`, `message/stream`, `tasks/get`) with
a card reduced to its 0.3 interface, and v1.0 (`SendMessage`, ...) with the card as served.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.client.client import Client
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)

from stores.sql.assistants import system_assistant_id
from tests.support import make_settings, running_server

CHAT = str(system_assistant_id("chat"))


@pytest.fixture(scope="module")
def a2a_url(database_url: str, data_dir: Path) -> Iterator[str]:
    settings = make_settings(
        database_url, data_dir, migrate_on_start=False, offline_token_delay_s=0.05
    )
    with running_server(settings) as url:
        yield url


async def _card(base_url: str, assistant_id: str = CHAT) -> AgentCard:
    async with httpx.AsyncClient() as http:
        resolver = A2ACardResolver(http, base_url)
        return await resolver.get_agent_card(
            relative_card_path=f"/.well-known/agent-card.json?assistant_id={assistant_id}"
        )


def _only(card: AgentCard, version: str) -> AgentCard:
    reduced = AgentCard()
    reduced.CopyFrom(card)
    keep = [i for i in card.supported_interfaces if i.protocol_version == version]
    del reduced.supported_interfaces[:]
    reduced.supported_interfaces.extend(keep)
    return reduced


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


def _client(card: AgentCard, http: httpx.AsyncClient, *, streaming: bool) -> Client:
    return ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)


def _ask(text: str, *, context_id: str = "") -> SendMessageRequest:
    message = Message(
        message_id=str(uuid.uuid4()),
        role=Role.ROLE_USER,
        parts=[Part(text=text)],
        context_id=context_id,
    )
    return SendMessageRequest(message=message)


async def _events(client: Client, request: SendMessageRequest) -> list[StreamResponse]:
    return [event async for event in client.send_message(request)]


def _answer(task: Task) -> str:
    return "".join(part.text for artifact in task.artifacts for part in artifact.parts)


async def test_agent_card_names_the_assistant_and_both_protocol_versions(a2a_url: str) -> None:
    card = await _card(a2a_url)
    assert card.name == "chat"
    assert card.capabilities.streaming
    urls = {(i.protocol_version, i.url) for i in card.supported_interfaces}
    assert urls == {("1.0", f"{a2a_url}/a2a/{CHAT}"), ("0.3", f"{a2a_url}/a2a/{CHAT}")}
    async with httpx.AsyncClient(base_url=a2a_url) as plain:
        raw = await plain.get("/.well-known/agent-card.json", params={"assistant_id": "chat"})
        missing = await plain.get("/.well-known/agent-card.json")
        unknown = await plain.get(
            "/.well-known/agent-card.json", params={"assistant_id": str(uuid.uuid4())}
        )
    assert raw.json()["url"] == f"{a2a_url}/a2a/{CHAT}"  # the v0.3 field, for older clients
    assert missing.status_code == 422
    assert "assistant_id" in missing.text
    assert unknown.status_code == 404


async def test_message_send_then_tasks_get_over_protocol_0_3(
    a2a_url: str, http: httpx.AsyncClient
) -> None:
    client = _client(_only(await _card(a2a_url), "0.3"), http, streaming=False)
    [event] = await _events(client, _ask("What is 12 * 12?"))
    task = event.task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert "144" in _answer(task)
    assert "".join(part.text for part in task.status.message.parts) == _answer(task)
    context_id, run_id = task.id.split(":")
    assert task.context_id == context_id
    assert [m.role for m in task.history] == [Role.ROLE_USER, Role.ROLE_AGENT]

    fetched = await client.get_task(GetTaskRequest(id=task.id))
    assert fetched.status.state == TaskState.TASK_STATE_COMPLETED
    assert _answer(fetched) == _answer(task)
    # The context is a thread of the Agent Server API, the task one of its runs.
    run = (await http.get(f"{a2a_url}/threads/{context_id}/runs/{run_id}")).json()
    assert (run["status"], run["metadata"]["source"]) == ("success", "a2a")


async def test_message_stream_sends_working_then_token_chunks_then_completed(
    a2a_url: str, http: httpx.AsyncClient
) -> None:
    client = _client(_only(await _card(a2a_url), "0.3"), http, streaming=True)
    events = await _events(client, _ask("What is Switchboard?"))
    kinds = [event.WhichOneof("payload") for event in events]
    assert kinds[0] == "task"
    assert events[0].task.status.state == TaskState.TASK_STATE_SUBMITTED
    assert kinds[1] == "status_update"
    assert events[1].status_update.status.state == TaskState.TASK_STATE_WORKING
    chunks = [e.artifact_update for e in events if e.WhichOneof("payload") == "artifact_update"]
    assert len(chunks) > 1  # token by token
    assert not chunks[0].append
    assert all(chunk.append for chunk in chunks[1:])
    assert kinds[-1] == "status_update"
    final = events[-1].status_update.status
    assert final.state == TaskState.TASK_STATE_COMPLETED
    streamed = "".join(part.text for chunk in chunks for part in chunk.artifact.parts)
    assert streamed == "".join(part.text for part in final.message.parts)


async def test_a_context_is_a_conversation_over_protocol_1_0(
    a2a_url: str, http: httpx.AsyncClient
) -> None:
    client = _client(await _card(a2a_url), http, streaming=False)
    [first] = await _events(client, _ask("My name is Ada."))
    context_id = first.task.context_id
    [second] = await _events(client, _ask("What is 2 + 3?", context_id=context_id))
    assert second.task.context_id == context_id
    assert second.task.id != first.task.id
    assert "5" in _answer(second.task)
    runs: list[dict[str, Any]] = (await http.get(f"{a2a_url}/threads/{context_id}/runs")).json()
    assert len(runs) == 2


async def test_tasks_cancel_stops_a_running_task(a2a_url: str, http: httpx.AsyncClient) -> None:
    card = _only(await _card(a2a_url), "0.3")
    streaming = _client(card, http, streaming=True)
    stream = streaming.send_message(_ask("Tell me everything about Switchboard's durable runs."))
    task_id = ""
    async for event in stream:
        if event.WhichOneof("payload") == "task":
            task_id = event.task.id
        if event.WhichOneof("payload") == "artifact_update":
            break  # the answer is streaming: the task is working
    await cast(AsyncGenerator[StreamResponse, None], stream).aclose()
    cancelled = await _client(card, http, streaming=False).cancel_task(
        CancelTaskRequest(id=task_id)
    )
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    again = await _client(card, http, streaming=False).get_task(GetTaskRequest(id=task_id))
    assert again.status.state == TaskState.TASK_STATE_CANCELED


async def test_bad_requests_get_json_rpc_errors_naming_the_problem(a2a_url: str) -> None:
    async with httpx.AsyncClient(base_url=a2a_url) as plain:

        async def call(path: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            response = await plain.post(path, json=body)
            assert response.status_code == 200, response.text
            error: dict[str, Any] = response.json()["error"]
            return error

        message = {"messageId": "m1", "role": "user", "parts": [{"kind": "text", "text": "hi"}]}
        unknown = await call(f"/a2a/{uuid.uuid4()}", "message/send", {"message": message})
        assert "not found" in unknown["message"]
        bad_context = await call(
            f"/a2a/{CHAT}", "message/send", {"message": {**message, "contextId": "nope"}}
        )
        assert "contextId" in bad_context["message"]
        no_task = await call(f"/a2a/{CHAT}", "tasks/get", {"id": f"{uuid.uuid4()}:{uuid.uuid4()}"})
        assert no_task["code"] == -32001  # TaskNotFoundError
        method = await call(f"/a2a/{CHAT}", "tasks/nonsense", {})
        assert method["code"] == -32601
