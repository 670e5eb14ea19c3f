"""One set of limits for every run, whichever API started it: tools switched off in the
`tools` table and RUN_TIMEOUT_S apply to /chat turns and Agent Server API runs alike."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg

from tests.integration.chat_support import stream_chat
from tests.integration.helpers import create_agent, create_user
from tests.support import make_settings, running_server, scratch_database

QUESTION = "What is 6 * 7?"


def test_a_tool_switched_off_is_off_for_chat_turns_and_agent_api_runs(
    pg_admin_url: str, tmp_path: Path
) -> None:
    with scratch_database(pg_admin_url, "tools_off") as url:
        with psycopg.connect(url) as conn:  # the operator's switch, set before the server starts
            conn.execute("INSERT INTO tools (name, enabled) VALUES ('calculator', false)")
        settings = make_settings(url, tmp_path, migrate_on_start=False)
        with running_server(settings) as base, httpx.Client(base_url=base, timeout=60) as api:
            agent = create_agent(api, tools=["calculator"])
            events = stream_chat(
                api,
                {"user_id": create_user(api)["id"], "agent_id": agent["id"], "message": QUESTION},
            )
            wait = api.post(
                "/runs/wait",
                json={
                    "assistant_id": "chat",
                    "input": {"messages": [{"role": "user", "content": QUESTION}]},
                    "context": {"tools": ["calculator"], "memory_policy": "off"},
                },
            )
            listed = {tool["name"]: tool["enabled"] for tool in api.get("/tools").json()}
    names = [name for name, _ in events]
    assert "tool_call" not in names
    assert names[-1] == "end"
    assert "42" not in dict(events)["message"]["content"]
    assert wait.status_code == 200, wait.text
    assert "42" not in wait.json()["answer"]
    assert [m["type"] for m in wait.json()["messages"]] == ["human", "ai"]
    assert listed["calculator"] is False


def test_run_timeout_s_ends_a_chat_turn_as_timeout(pg_admin_url: str, tmp_path: Path) -> None:
    with scratch_database(pg_admin_url, "chat_timeout") as url:
        settings = make_settings(
            url, tmp_path, migrate_on_start=False, run_timeout_s=0.5, offline_token_delay_s=0.1
        )
        with running_server(settings) as base, httpx.Client(base_url=base, timeout=60) as api:
            agent = create_agent(api)
            body = {"user_id": create_user(api)["id"], "agent_id": agent["id"], "message": "hi"}
            events = stream_chat(api, body)
            conversation_id = events[0][1]["conversation_id"]
            status = api.get(f"/conversations/{conversation_id}").json()["status"]
            transcript = api.get(f"/conversations/{conversation_id}/messages").json()["items"]
    assert [name for name, _ in events][-2:] == ["error", "end"]
    assert "TimeoutError" in dict(events)["error"]["message"]
    assert dict(events)["end"]["status"] == "timeout"
    assert status == "error"
    assert [m["sender"] for m in transcript] == ["user"]  # no answer was saved
