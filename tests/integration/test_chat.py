"""`/chat` over real HTTP with the offline model, real PostgreSQL, Qdrant and memory store."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.chat_support import sse_events, stream_chat, wait_for_samples
from tests.integration.helpers import create_agent, create_conversation, create_user
from tests.support import make_settings, running_server, scratch_database

TOOLS = ["knowledge_search", "calculator", "current_time", "remember", "forget"]


@pytest.fixture(scope="module")
def server_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """This module's server, seeding the sample documents as `make run` does."""
    settings = make_settings(
        database_url, data_dir, migrate_on_start=False, ingest_samples_on_start=True
    )
    with running_server(settings) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            wait_for_samples(client)
        yield url


@pytest.fixture
def pair(api: httpx.Client) -> tuple[str, str]:
    """A fresh user and an agent with the default tools."""
    return create_user(api)["id"], create_agent(api, tools=TOOLS)["id"]


def test_sse_events_arrive_in_order_and_the_answer_cites_sample_knowledge(
    api: httpx.Client, pair: tuple[str, str]
) -> None:
    user_id, agent_id = pair
    events = stream_chat(
        api,
        {"user_id": user_id, "agent_id": agent_id, "message": "Where does Switchboard keep "
         "LangGraph checkpoints and conversations?"},
    )  # fmt: skip
    names = [name for name, _ in events]
    assert names[0] == "metadata"
    assert names[-1] == "end"
    assert names.index("sources") < names.index("plan") < names.index("token")
    assert names.index("token") < names.index("message") < names.index("end")
    message = dict(events)["message"]
    assert "[1]" in message["content"] or "[2]" in message["content"]
    assert message["citations"]
    assert all(c["source"].endswith(".md") for c in message["citations"])
    tokens = "".join(data["text"] for name, data in events if name == "token")
    assert tokens == message["content"]


def test_arithmetic_goes_through_the_calculator_and_is_saved_as_messages(
    api: httpx.Client, pair: tuple[str, str], database_url: str
) -> None:
    user_id, agent_id = pair
    events = stream_chat(
        api, {"user_id": user_id, "agent_id": agent_id, "message": "What is 17 * (4 + 2)?"}
    )
    data = dict(events)
    assert data["tool_call"]["name"] == "calculator"
    assert data["tool_result"]["content"] == "102"
    assert "102" in data["message"]["content"]
    conversation_id = data["metadata"]["conversation_id"]
    transcript = api.get(f"/conversations/{conversation_id}/messages").json()["items"]
    assert [m["sender"] for m in transcript] == ["user", "tool", "agent"]
    agent_meta = transcript[2]["metadata"]
    assert agent_meta["model"] == "offline:offline"
    assert agent_meta["usage"]["output_tokens"] > 0
    assert agent_meta["latency_ms"] > 0
    assert agent_meta["tool_calls"][0]["name"] == "calculator"
    assert transcript[1]["metadata"]["tool"] == "calculator"
    with psycopg.connect(database_url) as conn:
        run = conn.execute(
            "SELECT status, thread_id::text FROM runs WHERE id = %s",
            (data["metadata"]["run_id"],),
        ).fetchone()
    assert run == ("success", conversation_id)


def test_remembered_fact_is_recalled_in_a_new_conversation(
    api: httpx.Client, pair: tuple[str, str]
) -> None:
    user_id, agent_id = pair
    first = stream_chat(
        api, {"user_id": user_id, "agent_id": agent_id, "message": "Remember that I'm vegetarian"}
    )
    assert dict(first)["tool_result"]["name"] == "remember"
    second = stream_chat(
        api,
        {"user_id": user_id, "agent_id": agent_id, "message": "What should I eat for dinner?"},
    )
    data = dict(second)
    assert data["metadata"]["conversation_id"] != dict(first)["metadata"]["conversation_id"]
    assert "vegetarian" in data["message"]["content"]


def test_non_streaming_variant_returns_json(api: httpx.Client, pair: tuple[str, str]) -> None:
    user_id, agent_id = pair
    conversation = create_conversation(api, user_id, agent_id)
    for path in ("/chat?stream=false", "/chat/invoke"):
        response = api.post(path, json={"conversation_id": conversation["id"], "message": "2+2?"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success"
        assert "4" in body["content"]
        assert body["tool_calls"][0]["name"] == "calculator"
        assert body["message_id"]


def test_failing_tool_is_reported_and_the_turn_still_answers(
    api: httpx.Client, pair: tuple[str, str]
) -> None:
    user_id, agent_id = pair
    events = dict(
        stream_chat(api, {"user_id": user_id, "agent_id": agent_id, "message": "What is 5/0?"})
    )
    assert events["tool_result"]["status"] == "error"
    assert "failed" in events["message"]["content"]
    assert events["end"]["status"] == "success"


def test_step_limit_from_agent_config_ends_gracefully(api: httpx.Client) -> None:
    user_id = create_user(api)["id"]
    agent_id = create_agent(api, tools=TOOLS, config={"max_steps": 1})["id"]
    events = stream_chat(
        api,
        {"user_id": user_id, "agent_id": agent_id, "message": "compute 3+4 then what time is it"},
    )
    names = [name for name, _ in events]
    assert names.count("tool_result") == 1
    assert "step_limit" in names
    assert "step limit" in dict(events)["message"]["content"]


def test_bad_requests_name_what_is_wrong(api: httpx.Client, pair: tuple[str, str]) -> None:
    user_id, agent_id = pair
    unknown = api.post("/chat", json={"conversation_id": str(uuid.uuid4()), "message": "hi"})
    assert unknown.status_code == 404
    assert unknown.json()["field"] == "conversation_id"
    conversation = create_conversation(api, user_id, agent_id)
    empty = api.post("/chat", json={"conversation_id": conversation["id"], "message": "   "})
    assert empty.status_code == 422
    huge = api.post("/chat", json={"conversation_id": conversation["id"], "message": "x" * 40_000})
    assert huge.status_code == 413
    assert huge.json()["field"] == "message"
    neither = api.post("/chat", json={"message": "hi"})
    assert neither.status_code == 422
    unknown_agent = api.post(
        "/chat", json={"user_id": user_id, "agent_id": str(uuid.uuid4()), "message": "hi"}
    )
    assert unknown_agent.status_code == 404


def test_conversation_whose_agent_was_deleted_is_409(api: httpx.Client) -> None:
    user_id = create_user(api)["id"]
    agent_id = create_agent(api)["id"]
    conversation = create_conversation(api, user_id, agent_id)
    assert api.delete(f"/agents/{agent_id}").status_code == 204
    response = api.post("/chat", json={"conversation_id": conversation["id"], "message": "hi"})
    assert response.status_code == 409
    assert "deleted" in response.json()["detail"]


def test_client_disconnect_does_not_lose_the_answer(
    api: httpx.Client, pair: tuple[str, str]
) -> None:
    user_id, agent_id = pair
    conversation = create_conversation(api, user_id, agent_id)
    with api.stream(
        "POST", "/chat", json={"conversation_id": conversation["id"], "message": "What is 6*7?"}
    ) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # read the start, then hang up
    saved: list[dict[str, Any]] = []
    for _ in range(100):
        saved = api.get(f"/conversations/{conversation['id']}/messages").json()["items"]
        if any(m["sender"] == "agent" for m in saved):
            break
        time.sleep(0.1)
    agent = [m for m in saved if m["sender"] == "agent"]
    assert agent
    assert "42" in agent[0]["content"]


def test_researcher_agent_answers_with_citations(api: httpx.Client) -> None:
    user_id = create_user(api)["id"]
    agent_id = create_agent(api, graph_id="researcher")["id"]
    events = dict(
        stream_chat(
            api,
            {"user_id": user_id, "agent_id": agent_id, "message": "What does Qdrant hold?"},
        )
    )
    assert events["metadata"]["graph_id"] == "researcher"
    assert events["message"]["citations"]


@pytest.mark.parametrize("durability", ["async", "exit"])
def test_conversation_resumes_after_a_restart(
    pg_admin_url: str, tmp_path: Path, durability: str
) -> None:
    with scratch_database(pg_admin_url, "chat_restart") as url:
        settings = make_settings(url, tmp_path, migrate_on_start=False, chat_durability=durability)
        with running_server(settings) as base, httpx.Client(base_url=base, timeout=60) as api:
            user_id = create_user(api)["id"]
            agent_id = create_agent(api, tools=TOOLS)["id"]
            first = dict(
                stream_chat(
                    api, {"user_id": user_id, "agent_id": agent_id, "message": "What is 9*9?"}
                )
            )
            conversation_id = first["metadata"]["conversation_id"]
        restarted = make_settings(url, tmp_path, migrate_on_start=False)
        with running_server(restarted) as base, httpx.Client(base_url=base, timeout=60) as api:
            second = dict(
                stream_chat(
                    api,
                    {"conversation_id": conversation_id, "message": "What did I ask before?"},
                )
            )
            assert "What is 9*9?" in second["message"]["content"]
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM checkpoints WHERE thread_id = %s", (conversation_id,)
            ).fetchone()
        assert row is not None
        assert row[0] > 0


def test_sse_parser_handles_pings() -> None:
    response = httpx.Response(200, text=": ping\n\nevent: end\ndata: {}\n\n")
    assert sse_events(response) == [("end", {})]


def test_long_conversation_keeps_only_the_latest_checkpoint(
    api: httpx.Client, pair: tuple[str, str], database_url: str
) -> None:
    user_id, agent_id = pair
    conversation = create_conversation(api, user_id, agent_id)
    for i in range(10):  # the server prunes every CHECKPOINT_PRUNE_EVERY (10) turns
        body = {"conversation_id": conversation["id"], "message": f"What is {i} + 1?"}
        assert api.post("/chat/invoke", json=body).json()["status"] == "success"
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM checkpoints WHERE thread_id = %s", (conversation["id"],)
        ).fetchone()
    assert row == (1,)
    again = api.post(
        "/chat/invoke",
        json={"conversation_id": conversation["id"], "message": "What did I ask before?"},
    ).json()
    assert "What is 9 + 1?" in again["content"]


def test_agent_with_an_unknown_tool_is_refused(api: httpx.Client) -> None:
    response = api.post("/agents", json={"name": "a", "tools": ["calculator", "shell"]})
    assert response.status_code == 422
    assert "unknown tools ['shell']" in response.text


def test_slow_answer_gets_heartbeats_and_the_conversation_is_busy_meanwhile(
    pg_admin_url: str, tmp_path: Path
) -> None:
    with scratch_database(pg_admin_url, "chat_ping") as url:
        settings = make_settings(
            url, tmp_path, migrate_on_start=False, offline_token_delay_s=0.1, chat_ping_s=0.25
        )
        with running_server(settings) as base, httpx.Client(base_url=base, timeout=60) as api:
            user_id = create_user(api)["id"]
            agent_id = create_agent(api)["id"]
            conversation_id = create_conversation(api, user_id, agent_id)["id"]
            body = {"conversation_id": conversation_id, "message": "hello"}
            with api.stream("POST", "/chat", json=body) as response:
                lines: list[str] = []
                for line in response.iter_lines():
                    lines.append(line)
                    if line == "event: token" and lines.count(line) == 1:
                        second = api.post("/chat", json=body)
                        assert second.status_code == 409
                        assert "busy" in second.json()["detail"]
                        status = api.get(f"/conversations/{conversation_id}").json()["status"]
                        assert status == "busy"
            assert api.get(f"/conversations/{conversation_id}").json()["status"] == "idle"
            assert api.post("/chat/invoke", json=body).json()["status"] == "success"
    assert any(line.startswith(": ping") for line in lines)
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event:")]
    assert events[0] == "metadata"
    assert events[-1] == "end"
    assert events.count("token") > 5


def test_tools_are_listed_with_their_json_schemas(api: httpx.Client) -> None:
    tools = {tool["name"]: tool for tool in api.get("/tools").json()}
    assert set(TOOLS) | {"http_get"} <= set(tools)
    assert tools["calculator"]["parameters"]["required"] == ["expression"]
    assert tools["http_get"]["cacheable"] is True
    assert all(tool["enabled"] for tool in tools.values())


def test_turns_sent_at_once_to_one_conversation_start_one_run(
    api: httpx.Client, pair: tuple[str, str], database_url: str
) -> None:
    conversation_id = create_conversation(api, *pair)["id"]
    body = {"conversation_id": conversation_id, "message": "What is 2+2?"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: api.post("/chat/invoke", json=body), range(8)))
    codes = sorted(r.status_code for r in responses)
    # One turn won the conversation's lock; the others found its run in flight, or (sent
    # after it ended) ran one after the other: never two runs of the conversation at once.
    assert set(codes) <= {200, 409}, codes
    assert 200 in codes, codes
    refused = [r.json()["detail"] for r in responses if r.status_code == 409]
    assert all("busy with run" in detail for detail in refused), refused
    with psycopg.connect(database_url) as conn:
        runs = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'success') FROM runs"
            " WHERE thread_id = %s",
            (conversation_id,),
        ).fetchone()
        users = conn.execute(
            "SELECT count(*) FROM messages WHERE conversation_id = %s AND sender = 'user'",
            (conversation_id,),
        ).fetchone()
    assert runs == (codes.count(200), codes.count(200))  # a refused turn wrote no run
    assert users == (codes.count(200),)  # nor its message
