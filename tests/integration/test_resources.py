"""The server starts without MongoDB or Qdrant: /healthz says what is down, runs complete with a
warning and an answer that says which source it could not consult, and MongoDB recovers when it
comes back (a real nx-27017 started again on the same port)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.integration.chat_support import stream_chat
from tests.integration.helpers import create_agent, create_user
from tests.integration.memory_support import nx_server
from tests.support import free_port, make_settings, running_server

TOOLS = ["knowledge_search", "calculator", "remember"]


def dependencies(api: httpx.Client) -> dict[str, str]:
    body: dict[str, Any] = api.get("/healthz").json()
    return {name: dep["status"] for name, dep in body["dependencies"].items()}


def chat(api: httpx.Client, user: str, agent: str, message: str) -> dict[str, Any]:
    """One turn in a new conversation: its events by name (warnings as a list)."""
    events = stream_chat(api, {"user_id": user, "agent_id": agent, "message": message})
    named: dict[str, Any] = dict(events)
    named["warnings"] = [data["message"] for name, data in events if name == "warning"]
    assert [name for name, _ in events][-1] == "end"
    return named


def test_mongodb_down_at_startup_then_back(database_url: str, tmp_path: Path) -> None:
    with nx_server(tmp_path / "nx") as nx:
        nx.kill()  # its port is known, and nothing listens there yet
        settings = make_settings(
            database_url,
            tmp_path / "data",
            migrate_on_start=False,
            mongodb_uri=nx.uri,
            mongodb_timeout_ms=300,
            mongodb_write_retries=0,
        )
        with running_server(settings) as base, httpx.Client(base_url=base, timeout=60) as api:
            assert api.get("/healthz").status_code == 503
            assert dependencies(api) == {"postgres": "ok", "qdrant": "ok", "mongodb": "down"}
            health = api.get("/healthz", headers={"X-Request-ID": "health-1"})
            error = health.json()["dependencies"]["mongodb"]["error"]
            assert "health-1" in error  # the log has the details; the public answer has none
            assert str(nx.port) not in error
            assert "127.0.0.1" not in error
            user, agent = create_user(api)["id"], create_agent(api, tools=TOOLS)["id"]
            down = chat(api, user, agent, "What do you know about me?")
            assert down["end"]["status"] == "success"
            assert any("long-term memory" in w for w in down["warnings"])
            assert "could not consult long-term memory" in down["message"]["content"]

            nx.start()
            assert dependencies(api)["mongodb"] == "ok"
            saved = chat(api, user, agent, "Remember that I'm vegetarian")
            assert saved["tool_result"]["status"] == "success"
            back = chat(api, user, agent, "What do you know about me?")
            assert back["warnings"] == []
            assert "vegetarian" in back["message"]["content"]


def test_qdrant_down_at_startup_the_server_starts_and_runs_say_what_they_missed(
    database_url: str, tmp_path: Path
) -> None:
    # A Qdrant server that nothing listens on yet (qdrant-client's local mode cannot be down).
    settings = make_settings(
        database_url,
        tmp_path / "data",
        migrate_on_start=False,
        qdrant_url=f"http://127.0.0.1:{free_port()}",
    )
    with running_server(settings) as base, httpx.Client(base_url=base, timeout=60) as api:
        assert dependencies(api) == {"postgres": "ok", "qdrant": "down", "mongodb": "ok"}
        user, agent = create_user(api)["id"], create_agent(api, tools=TOOLS)["id"]
        turn = chat(api, user, agent, "What does Switchboard keep in Qdrant?")
        searched = api.post("/search", json={"query": "anything"})
    assert turn["end"]["status"] == "success"
    assert any("knowledge base" in w for w in turn["warnings"])
    assert "could not consult the knowledge base" in turn["message"]["content"]
    assert searched.status_code == 503
