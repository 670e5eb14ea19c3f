"""A project's own auth.py, written as LangGraph's documentation writes it, served through
langgraph.json (`auth.path`) and driven by langgraph-sdk with two users: it stamps an owner and
returns a filter, checks store namespaces, and keeps assistants shared. The project's custom
routes (`http.app`) are public unless it sets `http.enable_custom_route_auth`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import NotFoundError, PermissionDeniedError

from tests.integration.auth_support import CUSTOM_PROJECT, OWNERS
from tests.support import make_settings, running_server

ASK: Any = {"messages": [{"role": "user", "content": "who am I?"}]}
ROUTES_AUTH = OWNERS / "routes_auth.json"  # the same, with http.enable_custom_route_auth


@pytest.fixture(scope="module")
def custom_url(database_url: str, data_dir: Path) -> Iterator[str]:
    settings = make_settings(
        database_url, data_dir, migrate_on_start=False, langgraph_config=CUSTOM_PROJECT
    )
    with running_server(settings) as url:
        yield url


def _sdk(url: str, token: str) -> LangGraphClient:
    return get_client(url=url, headers={"Authorization": f"Bearer {token}"})


async def test_threads_are_stamped_with_their_owner_and_filtered_by_it(custom_url: str) -> None:
    async with _sdk(custom_url, "user1-token") as alice, _sdk(custom_url, "user2-token") as bob:
        thread = await alice.threads.create(metadata={"topic": "plans"})
        assert (thread["metadata"] or {})["owner"] == "user1"
        with pytest.raises(NotFoundError):
            await bob.threads.get(thread["thread_id"])
        assert [t["thread_id"] for t in await alice.threads.search()] == [thread["thread_id"]]
        assert await bob.threads.search() == []
        assert await bob.threads.count() == 0
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await bob.runs.wait(thread["thread_id"], "whoami", input=ASK)
        assert refused.value.response.status_code == 404
        with pytest.raises(NotFoundError):
            await bob.threads.copy(thread["thread_id"])
        with pytest.raises(NotFoundError):
            await bob.threads.get_state(thread["thread_id"])


async def test_runs_execute_as_their_creator_who_reaches_the_graph(custom_url: str) -> None:
    async with _sdk(custom_url, "user1-token") as alice, _sdk(custom_url, "user2-token") as bob:
        thread = await alice.threads.create()
        values: Any = await alice.runs.wait(thread["thread_id"], "whoami", input=ASK)
        assert values["who"] == "user1"
        assert values["permissions"] == ["me"]
        # A run creating its own thread stamps it for its creator (the handler's create_run).
        values = await bob.runs.wait(
            None, "whoami", input=ASK, if_not_exists="create", on_completion="keep"
        )
        assert values["who"] == "user2"
        (bobs,) = await bob.threads.search()
        assert (bobs["metadata"] or {})["owner"] == "user2"
        assert all((t["metadata"] or {})["owner"] == "user1" for t in await alice.threads.search())


async def test_assistants_are_shared_but_changed_only_by_their_creator(custom_url: str) -> None:
    async with _sdk(custom_url, "user1-token") as alice, _sdk(custom_url, "user2-token") as bob:
        made = await alice.assistants.create("whoami", name="alice's", metadata={"team": "a"})
        assert (made["metadata"] or {})["owner"] == "user1"
        seen = await bob.assistants.get(made["assistant_id"])
        assert seen["name"] == "alice's"
        # Readable, so not hidden: changing it is forbidden (403), not "not found".
        with pytest.raises(PermissionDeniedError):
            await bob.assistants.update(made["assistant_id"], name="bob's now")
        with pytest.raises(PermissionDeniedError):
            await bob.assistants.delete(made["assistant_id"])
        # Bob may run the shared assistant: as himself, on his own thread.
        thread = await bob.threads.create()
        values: Any = await bob.runs.wait(thread["thread_id"], made["assistant_id"], input=ASK)
        assert values["who"] == "user2"
        renamed = await alice.assistants.update(made["assistant_id"], name="still alice's")
        assert renamed["name"] == "still alice's"


async def test_store_namespaces_begin_with_their_user(custom_url: str) -> None:
    async with _sdk(custom_url, "user1-token") as alice, _sdk(custom_url, "user2-token") as bob:
        await alice.store.put_item(["user1", "notes"], "k", {"text": "alice's note"})
        item = await alice.store.get_item(["user1", "notes"], "k")
        assert item["value"] == {"text": "alice's note"}
        with pytest.raises(PermissionDeniedError, match="Not authorized"):
            await bob.store.get_item(["user1", "notes"], "k")
        with pytest.raises(PermissionDeniedError):
            await bob.store.put_item(["user1", "notes"], "k", {"text": "bob wrote this"})
        with pytest.raises(PermissionDeniedError):
            await bob.store.search_items(["user1"])
        with pytest.raises(PermissionDeniedError):
            await bob.store.delete_item(["user1", "notes"], "k")
        assert (await bob.store.search_items(["user2"]))["items"] == []
        assert (await alice.store.get_item(["user1", "notes"], "k"))["value"]["text"] == (
            "alice's note"
        )


async def test_crons_are_stamped_and_filtered(custom_url: str) -> None:
    async with _sdk(custom_url, "user1-token") as alice, _sdk(custom_url, "user2-token") as bob:
        cron: Any = await alice.crons.create("whoami", schedule="0 0 1 1 *", input=ASK)
        assert [c["cron_id"] for c in await alice.crons.search()] == [cron["cron_id"]]
        assert await bob.crons.search() == []
        with pytest.raises(NotFoundError):
            await bob.crons.delete(cron["cron_id"])


def test_the_authenticate_function_decides_who_gets_in(custom_url: str) -> None:
    with httpx.Client(base_url=custom_url) as http:
        assert http.post("/threads/search", json={}).status_code == 401  # its assert fails
        wrong = http.post(
            "/threads/search", json={}, headers={"Authorization": "Bearer nobody-token"}
        )
        assert (wrong.status_code, wrong.json()["detail"]) == (401, "Invalid token")
        assert http.get("/ok").status_code == 200


def test_custom_routes_are_public_unless_the_project_asks_for_auth(
    custom_url: str, database_url: str, tmp_path: Path
) -> None:
    with httpx.Client(base_url=custom_url) as http:
        assert http.get("/hello").json() == {"hello": "world", "caller": None}
    settings = make_settings(
        database_url, tmp_path, migrate_on_start=False, langgraph_config=ROUTES_AUTH
    )
    with running_server(settings) as url, httpx.Client(base_url=url) as http:
        assert http.get("/hello").status_code == 401
        seen = http.get("/hello", headers={"Authorization": "Bearer user2-token"})
        assert seen.json() == {"hello": "world", "caller": "user2"}
