"""Abuse limits per identity: runs (and /chat turns) per minute answer 429 with Retry-After,
runs in flight are capped, a cron fires at most once a minute, and crons are capped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.auth_support import BUILTIN_PROJECT, client_with_key, make_keys
from tests.support import make_settings, running_server

ASK: Any = {"messages": [{"role": "user", "content": "who am I?"}]}


@pytest.fixture(scope="module")
def limited(database_url: str, data_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    keys = make_keys(
        database_url,
        {"rate@example.com": False, "busy@example.com": False, "cron@example.com": False},
    )
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        langgraph_config=BUILTIN_PROJECT,
        runs_per_minute=3,
        runs_in_flight_per_user=1,
        crons_per_user=2,
    )
    with running_server(settings) as url:
        yield url, keys


def test_runs_and_chat_turns_over_the_rate_get_429_with_retry_after(
    limited: tuple[str, dict[str, str]],
) -> None:
    url, keys = limited
    with client_with_key(url, keys["rate@example.com"]) as rate:
        (me,) = rate.get("/users").json()["items"]
        agent = rate.post("/agents", json={"name": "a", "graph_id": "whoami"}).json()["id"]
        for _ in range(2):
            assert (
                rate.post("/runs/wait", json={"assistant_id": "whoami", "input": ASK}).status_code
                == 200
            )
        turn = rate.post(
            "/chat/invoke", json={"user_id": me["id"], "agent_id": agent, "message": "hi"}
        )
        assert turn.status_code == 200, turn.text  # the third run of the minute
        over = rate.post("/runs/wait", json={"assistant_id": "whoami", "input": ASK})
        assert over.status_code == 429
        assert 1 <= int(over.headers["retry-after"]) <= 60
        assert "RUNS_PER_MINUTE" in over.json()["detail"]
        assert over.json()["request_id"] == over.headers["x-request-id"]
        chat = rate.post("/chat", json={"user_id": me["id"], "agent_id": agent, "message": "again"})
        assert chat.status_code == 429
        assert "retry-after" in chat.headers
    with client_with_key(url, keys["cron@example.com"]) as other:  # another identity's minute
        assert (
            other.post("/runs/wait", json={"assistant_id": "whoami", "input": ASK}).status_code
            == 200
        )


def test_runs_in_flight_are_capped_per_identity(limited: tuple[str, dict[str, str]]) -> None:
    url, keys = limited
    with client_with_key(url, keys["busy@example.com"]) as busy:
        thread = busy.post("/threads", json={}).json()["thread_id"]
        later = {"assistant_id": "whoami", "input": ASK, "after_seconds": 3600}
        first = busy.post(f"/threads/{thread}/runs", json=later)
        assert first.status_code == 200, first.text
        second = busy.post("/runs", json={"assistant_id": "whoami", "input": ASK})
        assert second.status_code == 429
        assert "RUNS_IN_FLIGHT_PER_USER" in second.json()["detail"]
        cancelled = busy.post(f"/threads/{thread}/runs/{first.json()['run_id']}/cancel")
        assert cancelled.status_code == 202
        assert (
            busy.post("/runs/wait", json={"assistant_id": "whoami", "input": ASK}).status_code
            == 200
        )


def test_crons_fire_at_most_once_a_minute_and_are_capped(
    limited: tuple[str, dict[str, str]],
) -> None:
    url, keys = limited
    with client_with_key(url, keys["cron@example.com"]) as user:
        every_second = user.post(
            "/runs/crons", json={"assistant_id": "whoami", "schedule": "* * * * * */1"}
        )
        assert every_second.status_code == 422
        assert every_second.json()["field"] == "schedule"
        assert "CRON_MIN_INTERVAL_S" in every_second.json()["detail"]
        made = [
            user.post("/runs/crons", json={"assistant_id": "whoami", "schedule": "* * * * *"})
            for _ in range(2)
        ]
        assert [m.status_code for m in made] == [200, 200]
        third = user.post("/runs/crons", json={"assistant_id": "whoami", "schedule": "@hourly"})
        assert third.status_code == 429
        assert "CRONS_PER_USER" in third.json()["detail"]
        faster = user.patch(
            f"/runs/crons/{made[0].json()['cron_id']}", json={"schedule": "*/30 * * * * *"}
        )
        assert faster.status_code == 422
