"""The Agent Server API's assistants, store and meta routes, driven with langgraph-sdk."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.client import SyncLangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError
from sqlalchemy import text

from stores.sql.assistants import backfill_versions, ensure_system_assistants
from stores.sql.database import open_database
from tests.support import TEST_GRAPHS, make_settings, running_server

NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")


@pytest.fixture(scope="module")
def server_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """A server of the test project (tests/projects/test_graphs): counter, ..."""
    settings = make_settings(
        database_url, data_dir, migrate_on_start=False, langgraph_config=TEST_GRAPHS
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture
def client(server_url: str) -> Iterator[SyncLangGraphClient]:
    """A langgraph-sdk sync client of the module's server."""
    with get_sync_client(url=server_url) as sdk:
        yield sdk


def _field_named(error: httpx.HTTPStatusError, field: str) -> bool:
    body = error.response.json()
    return field in str(body.get("detail")) or body.get("field") == field


def test_system_assistants_exist_per_graph_with_langgraph_api_ids(
    client: SyncLangGraphClient,
) -> None:
    system = client.assistants.search(metadata={"created_by": "system"}, limit=100)
    by_graph = {a["graph_id"]: a for a in system}
    assert {"chat", "researcher", "counter"} <= set(by_graph)
    for graph_id, assistant in by_graph.items():
        assert assistant["assistant_id"] == str(uuid.uuid5(NAMESPACE_GRAPH, graph_id))
        assert assistant["version"] == 1
    # A graph id is accepted wherever an assistant id is.
    assert client.assistants.get("chat")["assistant_id"] == by_graph["chat"]["assistant_id"]


async def test_system_chat_assistant_calculates_out_of_the_box(server_url: str) -> None:
    """Studio, RemoteGraph and the SDK get a working agent with no setup: "What is 12 * 12?"
    on the `chat` system assistant runs the calculator (a default tool) and answers 144."""
    question: Any = {"messages": [{"role": "user", "content": "What is 12 * 12?"}]}
    async with get_client(url=server_url) as sdk:
        values: Any = await sdk.runs.wait(None, "chat", input=question)
    messages = values["messages"]
    assert messages[-1]["type"] == "ai"
    assert "144" in messages[-1]["content"]
    async with httpx.AsyncClient(base_url=server_url) as http:
        agent = (await http.get(f"/agents/{uuid.uuid5(NAMESPACE_GRAPH, 'chat')}")).json()
        researcher = (await http.get(f"/agents/{uuid.uuid5(NAMESPACE_GRAPH, 'researcher')}")).json()
    assert agent["tools"] == ["knowledge_search", "calculator", "current_time"]
    assert researcher["tools"] == []  # it runs no tools, so it lists none


async def test_upgraded_database_gives_an_untouched_system_assistant_the_default_tools(
    database_url: str,
) -> None:
    """A chat system assistant made before default tools existed (version 1, no tools) gets
    them at the next start; one that somebody changed keeps what they chose."""
    async with open_database(database_url) as db:
        graph_ids = ["old-untouched", "old-changed"]
        made = await ensure_system_assistants(db, graph_ids)
        async with db.sessions.begin() as session:
            await session.execute(
                text("UPDATE agents SET version = 2 WHERE id = :id"), {"id": made[1].id}
            )
        tools = {graph_id: ["calculator"] for graph_id in graph_ids}
        untouched, changed = await ensure_system_assistants(db, graph_ids, tools=tools)
    assert untouched.tools == ["calculator"]
    assert changed.tools == []


def test_create_get_update_versions_latest_delete(client: SyncLangGraphClient) -> None:
    assistant_id = str(uuid.uuid4())
    created = client.assistants.create(
        "counter",
        assistant_id=assistant_id,
        name="Counter A",
        description="counts",
        config={"configurable": {"x": 1}},
        metadata={"team": "a"},
    )
    assert created["assistant_id"] == assistant_id
    # As langgraph-api: `config.configurable` is the assistant's context too.
    assert (created["version"], created["name"], created["context"]) == (1, "Counter A", {"x": 1})
    with pytest.raises(ConflictError):
        client.assistants.create("counter", assistant_id=assistant_id, if_exists="raise")
    same = client.assistants.create(
        "counter", assistant_id=assistant_id, if_exists="do_nothing", name="ignored"
    )
    assert same["name"] == "Counter A"

    updated = client.assistants.update(assistant_id, name="Counter B", metadata={"tier": 2})
    assert updated["version"] == 2
    assert updated["metadata"] == {"team": "a", "tier": 2}
    assert updated["config"] == {"configurable": {"x": 1}}
    assert client.assistants.get(assistant_id)["name"] == "Counter B"

    versions = client.assistants.get_versions(assistant_id)
    assert [v["version"] for v in versions] == [2, 1]
    assert [v["name"] for v in versions] == ["Counter B", "Counter A"]
    assert [v["version"] for v in client.assistants.get_versions(assistant_id, limit=1)] == [2]
    tier = client.assistants.get_versions(assistant_id, metadata={"tier": 2})
    assert [v["version"] for v in tier] == [2]

    restored = client.assistants.set_latest(assistant_id, 1)
    assert (restored["version"], restored["name"], restored["metadata"]) == (
        1,
        "Counter A",
        {"team": "a"},
    )
    # The next update is a new version after the highest, not a rewrite of version 2.
    assert client.assistants.update(assistant_id, description="again")["version"] == 3
    with pytest.raises(NotFoundError):
        client.assistants.set_latest(assistant_id, 99)

    client.assistants.delete(assistant_id)
    with pytest.raises(NotFoundError) as missing:
        client.assistants.get(assistant_id)
    assert "detail" in missing.value.response.json()
    with pytest.raises(NotFoundError):
        client.assistants.delete(assistant_id)


def test_search_and_count_filter_sort_page_and_select(client: SyncLangGraphClient) -> None:
    tag = uuid.uuid4().hex
    for name in ("beta", "alpha", "gamma"):
        client.assistants.create("counter", name=f"{name}-{tag}", metadata={"tag": tag})
    client.assistants.create("chat", name=f"delta-{tag}", metadata={"tag": tag})

    assert client.assistants.count(metadata={"tag": tag}) == 4
    assert client.assistants.count(metadata={"tag": tag}, graph_id="counter") == 3
    assert client.assistants.count(name=f"ALPHA-{tag}") == 1

    ordered = client.assistants.search(
        metadata={"tag": tag}, sort_by="name", sort_order="asc", limit=10
    )
    assert [a["name"].split("-")[0] for a in ordered] == ["alpha", "beta", "delta", "gamma"]
    page = client.assistants.search(
        metadata={"tag": tag}, sort_by="name", sort_order="asc", limit=2, offset=1
    )
    assert [a["name"].split("-")[0] for a in page] == ["beta", "delta"]
    paged = client.assistants.search(metadata={"tag": tag}, limit=2, response_format="object")
    assert paged["next"] == "2"
    selected = client.assistants.search(
        metadata={"tag": tag}, graph_id="chat", select=["assistant_id", "name"]
    )
    assert len(selected) == 1
    assert set(selected[0]) == {"assistant_id", "name"}


def test_graph_schemas_and_subgraphs(client: SyncLangGraphClient) -> None:
    drawn = client.assistants.get_graph("counter")
    nodes = {n["id"] for n in drawn["nodes"]}
    assert {"__start__", "start", "child", "finish", "__end__"} <= nodes
    assert {"source": "start", "target": "child"}.items() <= drawn["edges"][1].items() or any(
        e["source"] == "start" and e["target"] == "child" for e in drawn["edges"]
    )
    xray = client.assistants.get_graph("counter", xray=True)
    assert any("inner_step" in n["id"] for n in xray["nodes"])
    assert not any("inner_step" in n["id"] for n in drawn["nodes"])

    schemas: dict[str, Any] = dict(client.assistants.get_schemas("counter"))
    assert schemas["graph_id"] == "counter"
    assert set(schemas["state_schema"]["properties"]) == {"count", "log"}
    assert "count" in schemas["input_schema"]["properties"]
    chat: dict[str, Any] = dict(client.assistants.get_schemas("chat"))
    assert "messages" in chat["state_schema"]["properties"]
    assert "messages" in chat["input_schema"]["properties"]

    subgraphs: dict[str, Any] = dict(client.assistants.get_subgraphs("counter"))
    assert list(subgraphs) == ["child"]
    assert set(subgraphs["child"]["state_schema"]["properties"]) == {"count", "log"}
    assert list(client.assistants.get_subgraphs("counter", namespace="child")) == ["child"]
    assert client.assistants.get_subgraphs("counter", recurse=True).keys() == {"child"}


def test_bad_bodies_are_422_naming_the_field(
    client: SyncLangGraphClient, api: httpx.Client
) -> None:
    missing = api.post("/assistants", json={"name": "no graph"})
    assert missing.status_code == 422
    assert "graph_id" in missing.text
    with pytest.raises(UnprocessableEntityError) as unknown:
        client.assistants.create("no-such-graph")
    assert _field_named(unknown.value, "graph_id")
    bad_limit = api.post("/assistants/search", json={"limit": 0})
    assert bad_limit.status_code == 422
    assert "limit" in bad_limit.text
    bad_sort = api.post("/assistants/search", json={"sort_by": "color"})
    assert bad_sort.status_code == 422
    assert "sort_by" in bad_sort.text
    bad_xray = api.get("/assistants/chat/graph", params={"xray": "-1"})
    assert bad_xray.status_code == 422
    assert bad_xray.json()["field"] == "xray"
    bad_version = api.post("/assistants/chat/latest", json={"version": "x"})
    assert bad_version.status_code == 422
    assert "version" in bad_version.text
    assert api.get(f"/assistants/{uuid.uuid4()}").status_code == 404
    assert api.get("/assistants/no-such-graph/schemas").status_code == 404


def test_chat_api_agents_write_assistant_versions(
    client: SyncLangGraphClient, api: httpx.Client
) -> None:
    created = api.post("/agents", json={"name": "Helper", "system_prompt": "Be brief."})
    assert created.status_code == 201, created.text
    agent_id = created.json()["id"]
    patched = api.patch(f"/agents/{agent_id}", json={"system_prompt": "Be briefer."})
    assert patched.status_code == 200, patched.text
    versions = client.assistants.get_versions(agent_id)
    assert [v["version"] for v in versions] == [2, 1]
    assert client.assistants.get(agent_id)["name"] == "Helper"
    # After going back to version 1, the chat API's next update is version 3, not 2 again.
    client.assistants.set_latest(agent_id, 1)
    renamed = api.patch(f"/agents/{agent_id}", json={"name": "Helper 3"})
    assert renamed.json()["version"] == 3
    versions = client.assistants.get_versions(agent_id)
    assert [(v["version"], v["name"]) for v in versions][:2] == [(3, "Helper 3"), (2, "Helper")]


def test_store_items_put_get_search_namespaces_delete(client: SyncLangGraphClient) -> None:
    user = uuid.uuid4().hex
    client.store.put_item(["prefs", user], "color", {"text": "green", "kind": "color"})
    client.store.put_item(["prefs", user, "work"], "editor", {"text": "vim", "kind": "tool"})

    item = client.store.get_item(["prefs", user], "color")
    assert (item["namespace"], item["key"], item["value"]["text"]) == (
        ["prefs", user],
        "color",
        "green",
    )
    found = client.store.search_items(["prefs", user], filter={"kind": "tool"})
    assert [i["key"] for i in found["items"]] == ["editor"]
    both = client.store.search_items(["prefs", user], limit=10)
    assert {i["key"] for i in both["items"]} == {"color", "editor"}
    spaces = client.store.list_namespaces(prefix=["prefs", user])
    assert sorted(spaces["namespaces"]) == [["prefs", user], ["prefs", user, "work"]]
    shallow = client.store.list_namespaces(prefix=["prefs", user], max_depth=2)
    assert shallow["namespaces"] == [["prefs", user]]

    client.store.delete_item(["prefs", user], "color")
    assert client.store.get_item(["prefs", user], "color") is None  # as langgraph-api answers


def test_store_bad_input_names_the_field(api: httpx.Client) -> None:
    empty = api.put("/store/items", json={"namespace": [], "key": "k", "value": {}})
    assert empty.status_code == 422
    assert "namespace" in empty.text
    dotted = api.put("/store/items", json={"namespace": ["a.b"], "key": "k", "value": {}})
    assert dotted.status_code == 422
    assert "namespace" in dotted.text
    not_object = api.put("/store/items", json={"namespace": ["a"], "key": "k", "value": 3})
    assert not_object.status_code == 422
    assert "value" in not_object.text
    no_key = api.get("/store/items", params={"namespace": "a"})
    assert no_key.status_code == 422
    assert "key" in no_key.text
    bad_limit = api.post("/store/items/search", json={"namespace_prefix": ["a"], "limit": 0})
    assert bad_limit.status_code == 422
    assert "limit" in bad_limit.text


def test_ok_and_info_flags(api: httpx.Client) -> None:
    assert api.get("/ok").json() == {"ok": True}
    info = api.get("/info").json()
    assert info["flags"]["assistants"] is True
    assert info["flags"]["crons"] is True
    assert info["flags"]["langsmith"] is False
    assert info["flags"]["langsmith_tracing_session_on_runs"] is False
    assert info["version"]


def test_text_plain_json_bodies_are_accepted(api: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    body = f'{{"graph_id": "counter", "name": "plain-{tag}"}}'
    created = api.post("/assistants", content=body, headers={"Content-Type": "text/plain"})
    assert created.status_code == 200, created.text
    found = api.post(
        "/assistants/search",
        content=f'{{"name": "plain-{tag}"}}',
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert [a["assistant_id"] for a in found.json()] == [created.json()["assistant_id"]]
    broken = api.post(
        "/assistants/search", content="{not json", headers={"Content-Type": "text/plain"}
    )
    assert broken.status_code == 422


def test_cors_preflight_from_studio(api: httpx.Client) -> None:
    origin = "https://smith.langchain.com"
    preflight = api.options(
        "/assistants/search",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
    response = api.post("/assistants/search", json={"limit": 1}, headers={"Origin": origin})
    assert response.headers["access-control-allow-origin"] == origin
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-pagination-next" in exposed
    assert response.headers["x-pagination-next"] == "1"
    other = api.options(
        "/assistants/search",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers


# The headers Studio's front end sends with its calls.
STUDIO_HEADERS = "content-type,x-api-key,x-auth-scheme,x-request-id,authorization"


def test_studio_private_network_preflight_gets_its_answer(api: httpx.Client) -> None:
    """Chrome's Private Network Access: a public page (Studio) calling a server on loopback
    sends a preflight with `Access-Control-Request-Private-Network: true`; only an origin CORS
    allows gets `Access-Control-Allow-Private-Network: true` (without it Starlette refused the
    whole preflight with 400)."""
    origin = "https://smith.langchain.com"
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": STUDIO_HEADERS,
        "Access-Control-Request-Private-Network": "true",
    }
    studio = api.options("/threads/search", headers={"Origin": origin, **asked})
    assert studio.status_code == 200
    assert studio.headers["access-control-allow-private-network"] == "true"
    assert studio.headers["access-control-allow-origin"] == origin
    assert studio.headers["access-control-allow-credentials"] == "true"
    assert studio.headers["access-control-allow-headers"] == STUDIO_HEADERS
    assert "POST" in studio.headers["access-control-allow-methods"]
    assert "Access-Control-Request-Private-Network" in studio.headers["vary"]

    other = api.options("/threads/search", headers={"Origin": "https://evil.example", **asked})
    assert other.status_code == 400
    assert other.json()["field"] == "origin"
    assert "access-control-allow-private-network" not in other.headers
    assert "access-control-allow-origin" not in other.headers

    # Not a preflight (no Access-Control-Request-Method): CORS labels the answer as ever.
    simple = api.get(
        "/info", headers={"Origin": origin, "Access-Control-Request-Private-Network": "true"}
    )
    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-private-network" not in simple.headers
    plain = api.options("/threads/search")  # no Origin: no CORS at all
    assert "access-control-allow-private-network" not in plain.headers


async def test_async_client_drives_assistants_threads_and_store(server_url: str) -> None:
    client = get_client(url=server_url)
    try:
        assistant = await client.assistants.create("counter", name="async")
        assert (await client.assistants.get(assistant["assistant_id"]))["name"] == "async"
        thread = await client.threads.create(metadata={"graph_id": "counter"})
        written = await client.threads.update_state(
            thread["thread_id"], {"count": 3}, as_node="start"
        )
        state = await client.threads.get_state(thread["thread_id"])
        assert state["checkpoint"] == written["checkpoint"]
        await client.store.put_item(["async", "a"], "k", {"v": 1})
        assert (await client.store.get_item(["async", "a"], "k"))["value"] == {"v": 1}
    finally:
        await client.aclose()


async def test_backfill_writes_a_missing_version_row_once(
    database_url: str, server_url: str
) -> None:
    async with open_database(database_url, pool_size=1, max_overflow=0) as db:
        async with db.sessions.begin() as session:
            agent_id = await session.scalar(
                text("INSERT INTO agents (name, version) VALUES ('legacy', 3) RETURNING id")
            )
        assert await backfill_versions(db) == 1
        assert await backfill_versions(db) == 0
    client = get_client(url=server_url)
    try:
        versions = await client.assistants.get_versions(str(agent_id))
        assert [(v["version"], v["name"]) for v in versions] == [(3, "legacy")]
    finally:
        await client.aclose()


@pytest.mark.parametrize("graph_id", ["chat", "researcher"])
def test_declared_graphs_draw_and_describe_themselves(
    client: SyncLangGraphClient, graph_id: str
) -> None:
    for xray in (False, True):
        drawn = client.assistants.get_graph(graph_id, xray=xray)
        ids = {n["id"] for n in drawn["nodes"]}
        assert {"__start__", "__end__"} <= ids
        assert len(drawn["edges"]) >= len(ids) - 1
    schemas: dict[str, Any] = dict(client.assistants.get_schemas(graph_id))
    assert schemas["state_schema"]["properties"]
    assert schemas["input_schema"]["properties"]
    assert isinstance(client.assistants.get_subgraphs(graph_id, recurse=True), dict)


def test_delete_assistant_with_or_without_its_threads(client: SyncLangGraphClient) -> None:
    keep = client.assistants.create("counter", name="keeps threads")
    drop = client.assistants.create("counter", name="drops threads")
    kept_thread = client.threads.create(metadata={"assistant_id": keep["assistant_id"]})
    dropped_thread = client.threads.create(metadata={"assistant_id": drop["assistant_id"]})
    client.threads.update_state(dropped_thread["thread_id"], {"count": 1}, as_node="start")

    client.assistants.delete(keep["assistant_id"])
    assert client.threads.get(kept_thread["thread_id"])["thread_id"] == kept_thread["thread_id"]

    client.assistants.delete(drop["assistant_id"], delete_threads=True)
    with pytest.raises(NotFoundError):
        client.threads.get(dropped_thread["thread_id"])
    with pytest.raises(NotFoundError):
        client.assistants.get(drop["assistant_id"])
