"""Long-term memory end to end: facts told through /chat, Agent-API runs and the `remember` tool,
consolidated in MongoDB (nx-27017) with vectors in local Qdrant, recalled selectively in new
conversations; the model path through a local OpenAI-compatible server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client

from tests.integration.chat_support import stream_chat
from tests.integration.helpers import create_agent, create_conversation, create_user
from tests.integration.openai_fake import FakeOpenAI

Events = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def server_url(openai_server_url: str) -> str:
    """This module's server talks to the fake OpenAI-compatible endpoint."""
    return openai_server_url


def say(api: httpx.Client, user: str, agent: str, message: str) -> Events:
    """One turn in a new conversation; it must succeed."""
    events = stream_chat(api, {"user_id": user, "agent_id": agent, "message": message})
    assert dict(events)["end"]["status"] == "success", events
    return events


def saved(events: Events) -> list[tuple[str, str]]:
    return [(d["action"], d["text"]) for name, d in events if name == "memory_saved"]


def answer(events: Events) -> str:
    return str(dict(events)["message"]["content"])


def recalled(events: Events) -> list[str]:
    return list(dict(events).get("memories", {}).get("memories", []))


def memories(api: httpx.Client, user: str) -> list[dict[str, Any]]:
    listing = api.get(f"/users/{user}/memories", params={"limit": 100})
    assert listing.status_code == 200, listing.text
    return [item["value"] for item in listing.json()["items"]]


def test_a_fact_told_once_is_recalled_alone_in_another_conversation(api: httpx.Client) -> None:
    user, agent = create_user(api)["id"], create_agent(api, tools=[])["id"]
    for statement in [
        "My favourite colour is teal.",
        "My dog's name is Biscuit.",
        "I'm allergic to shellfish.",
        "I work at Globex as a data analyst.",
    ]:
        events = say(api, user, agent, statement)
        assert [action for action, _ in saved(events)][:1] == ["added"]
        assert answer(events).startswith("Noted: ")
    asked = say(api, user, agent, "What is my dog called?")
    assert recalled(asked) == ["My dog's name is Biscuit"]
    assert answer(asked) == "From what you've told me before: your dog's name is Biscuit."
    nothing = say(api, user, agent, "What's my sister's name?")
    assert recalled(nothing) == []
    assert "Biscuit" not in answer(nothing)
    first = memories(api, user)[-1]
    assert first["source"]["conversation_id"] != dict(asked)["metadata"]["conversation_id"]
    assert (first["subject"], first["attribute"], first["value"]) == (
        "user",
        "favourite colour",
        "teal",
    )


def test_a_changed_fact_supersedes_the_old_one_which_stays_as_history(api: httpx.Client) -> None:
    user, agent = create_user(api)["id"], create_agent(api, tools=[])["id"]
    told = say(api, user, agent, "I live in Lisbon.")
    moved = say(api, user, agent, "Actually, I moved to Porto last month.")
    assert saved(moved) == [("updated", "I moved to Porto last month")]
    [record] = memories(api, user)
    assert (record["value"], record["status"]) == ("Porto", "active")
    assert record["source"]["conversation_id"] == dict(moved)["metadata"]["conversation_id"]
    assert record["source"]["run_id"] == dict(moved)["metadata"]["run_id"]
    [old] = record["history"]
    assert old["text"] == "I live in Lisbon"
    assert old["source"]["conversation_id"] == dict(told)["metadata"]["conversation_id"]
    assert old["until"] >= old["source"]["at"]
    asked = say(api, user, agent, "Which city do I live in?")
    assert recalled(asked) == ["I moved to Porto last month"]
    assert "Porto" in answer(asked)
    assert "Lisbon" not in answer(asked)
    again = say(api, user, agent, "I moved to Porto.")
    assert [action for action, _ in saved(again)] == ["merged"]
    assert memories(api, user)[0]["mentions"] == 2


def test_agent_api_runs_and_the_remember_tool_consolidate_like_chat(
    api: httpx.Client, server_url: str
) -> None:
    user = create_user(api)["id"]
    agent = create_agent(api, tools=["remember"])["id"]
    thread = create_conversation(api, user, agent)["id"]
    client = get_sync_client(url=server_url)
    said: Any = {"messages": [{"role": "user", "content": "I live in Lisbon."}]}
    result: Any = client.runs.wait(thread, agent, input=said)
    assert result["answer"] == "Noted: you live in Lisbon."
    [record] = memories(api, user)
    assert (record["value"], record["source"]["conversation_id"]) == ("Lisbon", thread)
    tool_turn = say(api, user, agent, "Remember that I moved to Porto.")
    assert dict(tool_turn)["tool_call"]["name"] == "remember"
    assert "updated" in dict(tool_turn)["tool_result"]["content"]
    [record] = memories(api, user)
    assert (record["value"], record["source"]["origin"]) == ("Porto", "tool")
    assert record["history"][0]["source"]["conversation_id"] == thread
    asked = say(api, user, agent, "Where do I live?")
    assert recalled(asked) == ["I moved to Porto"]


def model_agent(api: httpx.Client) -> str:
    return str(create_agent(api, tools=[], model={"provider": "openai", "name": "fake-gpt"})["id"])


def structured(fake: FakeOpenAI, since: int) -> list[str]:
    return [
        r["response_format"]["json_schema"]["name"]
        for r in fake.requests[since:]
        if r.get("response_format")
    ]


def test_the_model_extracts_and_decides_through_structured_output(
    api: httpx.Client, fake_openai: tuple[str, FakeOpenAI]
) -> None:
    _, fake = fake_openai
    user, agent = create_user(api)["id"], model_agent(api)
    before = len(fake.requests)
    assert saved(say(api, user, agent, "I live in Lisbon.")) == [("added", "I live in Lisbon")]
    assert structured(fake, before) == ["ExtractedFacts"]  # nothing held: no decision call
    before = len(fake.requests)
    moved = say(api, user, agent, "Actually, I moved to Porto last month.")
    assert saved(moved) == [("updated", "I moved to Porto last month")]
    assert structured(fake, before) == ["ExtractedFacts", "MemoryDecisions"]
    decision_request = next(r for r in fake.requests[before:] if "MemoryDecisions" in str(r))
    assert "I live in Lisbon" in str(decision_request["messages"])
    assert decision_request["response_format"]["json_schema"]["strict"] is True
    [record] = memories(api, user)
    assert record["source"]["extractor"] == "model"
    assert record["history"][0]["value"] == "Lisbon"
    asked = say(api, user, agent, "Which city do I live in?")
    assert answer(asked) == "You told me: I moved to Porto last month."


def test_a_model_decision_to_delete_retracts_the_memory(
    api: httpx.Client, fake_openai: tuple[str, FakeOpenAI]
) -> None:
    _, fake = fake_openai
    user, agent = create_user(api)["id"], model_agent(api)
    say(api, user, agent, "I like jazz.")
    fake.scripted["MemoryDecisions"] = [
        {"decisions": [{"fact_id": "f0", "action": "delete", "target": "m0"}]}
    ]
    events = say(api, user, agent, "I don't like jazz anymore.")
    assert saved(events) == [("retracted", "I like jazz")]
    [record] = memories(api, user)
    assert (record["status"], record["history"][-1]["text"]) == ("retracted", "I like jazz")
    assert recalled(say(api, user, agent, "Do I like jazz?")) == []


def test_a_model_that_answers_badly_leaves_the_offline_extractor_to_remember(
    api: httpx.Client, fake_openai: tuple[str, FakeOpenAI]
) -> None:
    _, fake = fake_openai
    user, agent = create_user(api)["id"], model_agent(api)
    fake.scripted["ExtractedFacts"] = [{"facts": "not a list"}]
    events = say(api, user, agent, "My manager is Priya Raman.")
    assert saved(events) == [("added", "My manager is Priya Raman")]
    warnings = [d["message"] for name, d in events if name == "warning"]
    assert any("offline extractor" in w for w in warnings)
    [record] = memories(api, user)
    assert record["source"]["extractor"] == "offline"
