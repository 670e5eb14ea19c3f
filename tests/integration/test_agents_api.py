"""The /agents routes over real HTTP against a real PostgreSQL."""

from __future__ import annotations

import uuid

import httpx

from tests.integration.helpers import create_agent, create_conversation, create_user


def test_create_agent_with_full_configuration(api: httpx.Client) -> None:
    body = {
        "name": "Librarian",
        "description": "Answers from the docs",
        "graph_id": "researcher",
        "system_prompt": "Cite everything.",
        "model": {"provider": "openai", "name": "gpt-4o-mini", "temperature": 0.2},
        "tools": ["knowledge_search", "calculator"],
        "collections": ["docs", "faq"],
        "config": {"max_steps": 4},
        "metadata": {"team": "support"},
    }
    response = api.post("/agents", json=body)
    assert response.status_code == 201, response.text
    agent = response.json()
    for key, value in body.items():
        assert agent[key] == value, key
    assert agent["version"] == 1
    assert api.get(f"/agents/{agent['id']}").json() == agent


def test_defaults_make_a_chat_agent(api: httpx.Client) -> None:
    agent = create_agent(api)
    assert agent["graph_id"] == "chat"
    assert agent["tools"] == []
    assert agent["model"] == {}


def test_every_update_bumps_the_version(api: httpx.Client) -> None:
    agent = create_agent(api)
    first = api.patch(f"/agents/{agent['id']}", json={"system_prompt": "Be brief."}).json()
    second = api.patch(f"/agents/{agent['id']}", json={"tools": ["calculator"]}).json()
    assert (first["version"], second["version"]) == (2, 3)
    assert second["system_prompt"] == "Be brief."
    assert second["tools"] == ["calculator"]


def test_invalid_agent_fields_are_named(api: httpx.Client) -> None:
    cases = [
        ({"name": ""}, ("body", "name")),
        ({"name": "a", "tools": ["bad name!"]}, ("body", "tools", 0)),
        ({"name": "a", "tools": ["calculator", "calculator"]}, ("body", "tools")),
        ({"name": "a", "model": {"temperature": 5}}, ("body", "model", "temperature")),
        ({"name": "a", "model": {"provider": "skynet"}}, ("body", "model", "provider")),
        ({"name": "a", "graph_id": "../etc"}, ("body", "graph_id")),
        ({"name": "a", "collections": "docs"}, ("body", "collections")),
    ]
    for body, loc in cases:
        response = api.post("/agents", json=body)
        assert response.status_code == 422, body
        assert tuple(response.json()["detail"][0]["loc"]) == loc, body


def test_list_agents_filters_by_graph(api: httpx.Client) -> None:
    graph = f"g_{uuid.uuid4().hex[:8]}"
    mine = {create_agent(api, graph_id=graph)["id"] for _ in range(3)}
    create_agent(api)
    page = api.get("/agents", params={"graph_id": graph}).json()
    assert page["total"] == 3
    assert {a["id"] for a in page["items"]} == mine


def test_deleting_an_agent_keeps_its_conversations(api: httpx.Client) -> None:
    user = create_user(api)
    agent = create_agent(api)
    conversation = create_conversation(api, user["id"], agent["id"])
    assert api.delete(f"/agents/{agent['id']}").status_code == 204
    assert api.get(f"/agents/{agent['id']}").status_code == 404
    kept = api.get(f"/conversations/{conversation['id']}")
    assert kept.status_code == 200
    assert kept.json()["agent_id"] is None


def test_unknown_agent_is_404(api: httpx.Client) -> None:
    missing = uuid.uuid4()
    assert api.get(f"/agents/{missing}").status_code == 404
    assert api.patch(f"/agents/{missing}", json={"name": "x"}).status_code == 404
    assert api.delete(f"/agents/{missing}").status_code == 404
