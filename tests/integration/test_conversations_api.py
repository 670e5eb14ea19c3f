"""The /conversations and /conversations/{id}/messages routes over real HTTP."""

from __future__ import annotations

import uuid

import httpx

from tests.integration.helpers import create_agent, create_conversation, create_user


def test_create_list_get_update_delete_conversation(api: httpx.Client) -> None:
    user = create_user(api)
    agent = create_agent(api)
    created = api.post(
        "/conversations",
        json={
            "user_id": user["id"],
            "agent_id": agent["id"],
            "title": "Trip",
            "metadata": {"k": 1},
        },
    )
    assert created.status_code == 201, created.text
    conversation = created.json()
    assert conversation["status"] == "idle"
    assert conversation["title"] == "Trip"

    by_user = api.get(f"/users/{user['id']}/conversations").json()
    assert [c["id"] for c in by_user["items"]] == [conversation["id"]]
    by_query = api.get("/conversations", params={"user_id": user["id"]}).json()
    assert by_query == by_user

    renamed = api.patch(f"/conversations/{conversation['id']}", json={"title": "Trip to Rome"})
    assert renamed.json()["title"] == "Trip to Rome"

    assert api.delete(f"/conversations/{conversation['id']}").status_code == 204
    assert api.get(f"/conversations/{conversation['id']}").status_code == 404
    assert api.get(f"/users/{user['id']}/conversations").json()["total"] == 0


def test_unknown_user_or_agent_is_404_naming_the_field(api: httpx.Client) -> None:
    user = create_user(api)
    agent = create_agent(api)
    no_user = api.post(
        "/conversations", json={"user_id": str(uuid.uuid4()), "agent_id": agent["id"]}
    )
    assert no_user.status_code == 404
    assert no_user.json()["field"] == "user_id"
    no_agent = api.post(
        "/conversations", json={"user_id": user["id"], "agent_id": str(uuid.uuid4())}
    )
    assert no_agent.status_code == 404
    assert no_agent.json()["field"] == "agent_id"
    missing = api.post("/conversations", json={"user_id": user["id"]})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "agent_id"]
    assert api.get(f"/users/{uuid.uuid4()}/conversations").status_code == 404


def test_conversations_list_most_recently_active_first(api: httpx.Client) -> None:
    user = create_user(api)
    agent = create_agent(api)
    older = create_conversation(api, user["id"], agent["id"])
    newer = create_conversation(api, user["id"], agent["id"])
    listed = api.get(f"/users/{user['id']}/conversations").json()["items"]
    assert [c["id"] for c in listed] == [newer["id"], older["id"]]
    api.post(f"/conversations/{older['id']}/messages", json={"sender": "user", "content": "hi"})
    listed = api.get(f"/users/{user['id']}/conversations").json()["items"]
    assert [c["id"] for c in listed] == [older["id"], newer["id"]]


def test_messages_paginate_in_write_order(api: httpx.Client) -> None:
    user = create_user(api)
    agent = create_agent(api)
    conversation = create_conversation(api, user["id"], agent["id"])
    url = f"/conversations/{conversation['id']}/messages"
    for i in range(7):
        sender = "user" if i % 2 == 0 else "agent"
        body = {"sender": sender, "content": f"m{i}", "metadata": {"i": i}}
        assert api.post(url, json=body).status_code == 201

    first = api.get(url, params={"limit": 3}).json()
    assert first["total"] == 7
    assert [m["content"] for m in first["items"]] == ["m0", "m1", "m2"]
    last = api.get(url, params={"limit": 3, "offset": 6}).json()
    assert [m["content"] for m in last["items"]] == ["m6"]
    newest = api.get(url, params={"limit": 2, "order": "desc"}).json()
    assert [m["content"] for m in newest["items"]] == ["m6", "m5"]
    assert first["items"][1]["metadata"] == {"i": 1}
    for params in ({"limit": 0}, {"limit": 500}, {"order": "sideways"}):
        assert api.get(url, params=params).status_code == 422


def test_message_validation_and_unknown_conversation(api: httpx.Client) -> None:
    user = create_user(api)
    agent = create_agent(api)
    conversation = create_conversation(api, user["id"], agent["id"])
    url = f"/conversations/{conversation['id']}/messages"
    bad_sender = api.post(url, json={"sender": "robot", "content": "x"})
    assert bad_sender.status_code == 422
    assert bad_sender.json()["detail"][0]["loc"] == ["body", "sender"]
    missing = f"/conversations/{uuid.uuid4()}/messages"
    assert api.post(missing, json={"sender": "user", "content": "x"}).status_code == 404
    assert api.get(missing).status_code == 404


def test_deleting_a_conversation_deletes_its_messages(api: httpx.Client, database_url: str) -> None:
    import psycopg

    user = create_user(api)
    agent = create_agent(api)
    conversation = create_conversation(api, user["id"], agent["id"])
    url = f"/conversations/{conversation['id']}/messages"
    for _ in range(3):
        api.post(url, json={"sender": "user", "content": "x"})
    assert api.delete(f"/conversations/{conversation['id']}").status_code == 204
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT count(*) FROM messages WHERE conversation_id = %s", (conversation["id"],)
        ).fetchone()
    assert row == (0,)
