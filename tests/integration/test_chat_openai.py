"""The OpenAI path: /chat with an agent on provider "openai", against a local fake server."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.chat_support import stream_chat
from tests.integration.helpers import create_agent, create_user
from tests.integration.openai_fake import FakeOpenAI


@pytest.fixture(scope="module")
def server_url(openai_server_url: str) -> str:
    """This module's server talks to the fake OpenAI-compatible endpoint."""
    return openai_server_url


def test_openai_agent_calls_tools_and_streams_its_answer(
    api: httpx.Client, fake_openai: tuple[str, FakeOpenAI]
) -> None:
    _, fake = fake_openai
    user_id = create_user(api)["id"]
    agent_id = create_agent(
        api, tools=["calculator"], model={"provider": "openai", "name": "fake-gpt"}
    )["id"]
    before = len(fake.requests)
    events = stream_chat(
        api, {"user_id": user_id, "agent_id": agent_id, "message": "What is 6 * 7?"}
    )
    names = [name for name, _ in events]
    data = dict(events)
    assert data["tool_call"]["name"] == "calculator"
    assert data["tool_result"]["content"] == "42"
    assert names.count("token") >= 3
    assert data["message"]["content"] == "The calculator says 42."
    assert data["message"]["model"] == "openai:fake-gpt"
    assert data["message"]["usage"]["total_tokens"] > 0
    sent = fake.requests[before:]
    assert all(r["model"] == "fake-gpt" for r in sent)
    assert sent[0]["tools"][0]["function"]["name"] == "calculator"
    assert sent[-1]["stream"] is True  # the answer is streamed
    assert any(m["role"] == "tool" for m in sent[-1]["messages"])


def test_openai_agent_without_tools_just_answers(
    api: httpx.Client, fake_openai: tuple[str, FakeOpenAI]
) -> None:
    user_id = create_user(api)["id"]
    agent_id = create_agent(api, model={"provider": "openai", "name": "fake-gpt"})["id"]
    body = api.post(
        "/chat/invoke", json={"user_id": user_id, "agent_id": agent_id, "message": "Hi there"}
    ).json()
    assert body["status"] == "success"
    assert body["content"].startswith("Hello from the fake model")


def test_unreachable_openai_endpoint_is_an_error_event_then_end(
    api: httpx.Client, fake_openai: tuple[str, FakeOpenAI]
) -> None:
    user_id = create_user(api)["id"]
    agent_id = create_agent(api, model={"provider": "openai", "name": "fake-gpt", "timeout_s": 2})[
        "id"
    ]
    _, fake = fake_openai
    fake.app.router.routes.clear()  # the endpoint now answers 404 to everything
    events = stream_chat(api, {"user_id": user_id, "agent_id": agent_id, "message": "Hi"})
    names = [name for name, _ in events]
    assert names[0] == "metadata"
    assert names[-2:] == ["error", "end"]
    assert dict(events)["end"]["status"] == "error"
