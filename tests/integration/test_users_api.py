"""The /users routes over real HTTP against a real PostgreSQL."""

from __future__ import annotations

import uuid

import httpx

from tests.integration.helpers import create_agent, create_conversation, create_user, unique_email


def test_create_get_update_delete_user(api: httpx.Client) -> None:
    email = unique_email()
    created = api.post("/users", json={"email": email.upper(), "name": "Ada", "metadata": {"a": 1}})
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["email"] == email
    assert user["metadata"] == {"a": 1}

    fetched = api.get(f"/users/{user['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == user

    patched = api.patch(f"/users/{user['id']}", json={"name": "Ada L."})
    assert patched.status_code == 200
    assert patched.json()["name"] == "Ada L."
    assert patched.json()["email"] == email

    assert api.delete(f"/users/{user['id']}").status_code == 204
    assert api.get(f"/users/{user['id']}").status_code == 404


def test_duplicate_email_is_conflict_naming_the_field(api: httpx.Client) -> None:
    email = unique_email()
    assert api.post("/users", json={"email": email, "name": "A"}).status_code == 201
    again = api.post("/users", json={"email": email.upper(), "name": "B"})
    assert again.status_code == 409
    assert again.json()["field"] == "email"


def test_update_to_taken_email_is_conflict(api: httpx.Client) -> None:
    first = create_user(api)
    second = create_user(api)
    response = api.patch(f"/users/{second['id']}", json={"email": first["email"]})
    assert response.status_code == 409
    assert response.json()["field"] == "email"
    assert api.get(f"/users/{second['id']}").json()["email"] == second["email"]


def test_invalid_fields_are_422_naming_each_field(api: httpx.Client) -> None:
    response = api.post("/users", json={"email": "not-an-email", "name": "", "colour": "red"})
    assert response.status_code == 422
    locations = {tuple(err["loc"]) for err in response.json()["detail"]}
    assert ("body", "email") in locations
    assert ("body", "name") in locations
    assert ("body", "colour") in locations


def test_null_in_a_patch_is_422_not_a_database_error(api: httpx.Client) -> None:
    user = create_user(api)
    response = api.patch(f"/users/{user['id']}", json={"name": None})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


def test_metadata_must_be_an_object(api: httpx.Client) -> None:
    response = api.post("/users", json={"email": unique_email(), "name": "A", "metadata": [1]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "metadata"]


def test_malformed_json_is_422(api: httpx.Client) -> None:
    response = api.post(
        "/users", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_unknown_and_malformed_ids(api: httpx.Client) -> None:
    assert api.get(f"/users/{uuid.uuid4()}").status_code == 404
    assert api.patch(f"/users/{uuid.uuid4()}", json={"name": "x"}).status_code == 404
    assert api.delete(f"/users/{uuid.uuid4()}").status_code == 404
    bad = api.get("/users/not-a-uuid")
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["path", "user_id"]


def test_list_users_paginates_newest_first(api: httpx.Client) -> None:
    made = [create_user(api)["id"] for _ in range(5)]
    first = api.get("/users", params={"limit": 2, "offset": 0}).json()
    second = api.get("/users", params={"limit": 2, "offset": 2}).json()
    assert first["limit"] == 2
    assert first["total"] >= 5
    assert [u["id"] for u in first["items"]] == made[::-1][:2]
    assert [u["id"] for u in second["items"]] == made[::-1][2:4]


def test_pagination_bounds_are_enforced(api: httpx.Client) -> None:
    for params in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"limit": "many"}):
        response = api.get("/users", params=params)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["loc"][0] == "query"
    assert api.get("/users", params={"limit": 200}).status_code == 200
    past_the_end = api.get("/users", params={"offset": 1_000_000}).json()
    assert past_the_end["items"] == []


def test_deleting_a_user_deletes_their_conversations_and_messages(api: httpx.Client) -> None:
    user = create_user(api)
    agent = create_agent(api)
    conversation = create_conversation(api, user["id"], agent["id"])
    added = api.post(
        f"/conversations/{conversation['id']}/messages", json={"sender": "user", "content": "hi"}
    )
    assert added.status_code == 201

    assert api.delete(f"/users/{user['id']}").status_code == 204
    assert api.get(f"/conversations/{conversation['id']}").status_code == 404
    assert api.get(f"/conversations/{conversation['id']}/messages").status_code == 404
    assert api.get(f"/agents/{agent['id']}").status_code == 200
