"""The memory API over real HTTP: a server that spawns its own nx-27017, Qdrant local, MiniLM."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from server.schemas.memory import StoreItemPut, StoreItemsSearch, StoreNamespacesList
from tests.integration.memory_support import FACTS
from tests.support import make_settings, running_server


def new_user(api: httpx.Client) -> str:
    response = api.post(
        "/users", json={"email": f"{uuid.uuid4().hex[:10]}@example.com", "name": "Mem"}
    )
    assert response.status_code == 201, response.text
    user_id: str = response.json()["id"]
    return user_id


def remember(api: httpx.Client, user: str, key: str, text: str) -> httpx.Response:
    return api.put(f"/users/{user}/memories/{key}", json={"value": {"text": text}})


def test_healthz_reports_the_embedded_mongodb(api: httpx.Client) -> None:
    body = api.get("/healthz").json()
    assert body["dependencies"]["mongodb"]["status"] == "ok"
    assert body["dependencies"]["mongodb"]["kind"] == "embedded"


def test_put_list_and_search_memories_ranks_the_allergy_first(api: httpx.Client) -> None:
    user = new_user(api)
    for i, fact in enumerate(FACTS):
        response = remember(api, user, f"fact-{i}", fact)
        assert response.status_code == 200, response.text
    stored = response.json()
    assert stored["namespace"] == [user, "memories"]
    assert stored["key"] == f"fact-{len(FACTS) - 1}"

    listing = api.get(f"/users/{user}/memories", params={"limit": 5}).json()
    assert listing["total"] == len(FACTS)
    assert [m["key"] for m in listing["items"]] == [f"fact-{i}" for i in range(10, 5, -1)]
    assert all(m["score"] is None for m in listing["items"])

    found = api.get(
        f"/users/{user}/memories", params={"q": "what food should I avoid?", "limit": 3}
    ).json()
    assert found["query"] == "what food should I avoid?"
    assert found["items"][0]["value"]["text"] == "I'm allergic to peanuts"
    assert found["items"][0]["score"] > found["items"][1]["score"]
    page2 = api.get(
        f"/users/{user}/memories", params={"q": "what food should I avoid?", "offset": 1}
    ).json()
    assert page2["items"][0]["key"] == found["items"][1]["key"]


def test_search_never_returns_another_users_memories(api: httpx.Client) -> None:
    alice, bob = new_user(api), new_user(api)
    remember(api, alice, "allergy", "I'm allergic to peanuts")
    remember(api, bob, "hobby", "I collect stamps")
    bob_found = api.get(f"/users/{bob}/memories", params={"q": "peanut allergy"}).json()
    assert [m["key"] for m in bob_found["items"]] == ["hobby"]
    assert api.get(f"/users/{bob}/memories").json()["total"] == 1
    alice_found = api.get(f"/users/{alice}/memories", params={"q": "stamps"}).json()
    assert [m["key"] for m in alice_found["items"]] == ["allergy"]


def test_forget_one_memory_then_everything_including_vectors(api: httpx.Client) -> None:
    user = new_user(api)
    for key, text in [("a", "I'm allergic to peanuts"), ("b", "I like tea"), ("c", "I run")]:
        remember(api, user, key, text)
    assert api.delete(f"/users/{user}/memories/a").status_code == 204
    missing = api.delete(f"/users/{user}/memories/a")
    assert missing.status_code == 404
    assert missing.json()["field"] == "key"
    found = api.get(f"/users/{user}/memories", params={"q": "peanuts"}).json()
    assert "a" not in [m["key"] for m in found["items"]]
    forgot = api.delete(f"/users/{user}/memories")
    assert forgot.status_code == 200
    assert forgot.json() == {"deleted": 2}
    assert api.get(f"/users/{user}/memories").json() == {
        "items": [],
        "total": 0,
        "limit": 20,
        "offset": 0,
        "query": None,
    }
    assert api.get(f"/users/{user}/memories", params={"q": "tea"}).json()["items"] == []


def test_unknown_users_get_404_and_malformed_input_422(api: httpx.Client) -> None:
    ghost = str(uuid.uuid4())
    assert api.get(f"/users/{ghost}/memories").status_code == 404
    assert api.delete(f"/users/{ghost}/memories").status_code == 404
    assert api.delete(f"/users/{ghost}/memories/k").status_code == 404
    assert remember(api, ghost, "k", "text").status_code == 404
    assert api.get("/users/not-a-uuid/memories").status_code == 422

    user = new_user(api)
    not_object = api.put(f"/users/{user}/memories/k", json={"value": ["a", "list"]})
    assert not_object.status_code == 422
    assert "value" in not_object.text
    assert api.put(f"/users/{user}/memories/k", json={"value": "text"}).status_code == 422
    assert api.put(f"/users/{user}/memories/k", json={}).status_code == 422
    extra = api.put(f"/users/{user}/memories/k", json={"value": {}, "surprise": 1})
    assert extra.status_code == 422
    bad_ttl = api.put(f"/users/{user}/memories/k", json={"value": {}, "ttl_minutes": -1})
    assert bad_ttl.status_code == 422
    long_key = "k" * 600
    assert remember(api, user, long_key, "text").status_code == 422
    assert remember(api, user, "tab%09key", "text").status_code == 422
    assert api.get(f"/users/{user}/memories", params={"limit": 0}).status_code == 422
    assert api.get(f"/users/{user}/memories", params={"q": ""}).status_code == 422
    assert api.get(f"/users/{user}/memories").json()["total"] == 0


def test_a_correction_through_the_api_counts_as_a_newer_fact(api: httpx.Client) -> None:
    user = new_user(api)
    first = remember(api, user, "home", "I live in Lisbon").json()["value"]
    assert (first["attribute"], first["value"], first["exclusive"]) == ("lives in", "Lisbon", True)
    corrected = remember(api, user, "home", "I live in Porto").json()["value"]
    assert (corrected["value"], corrected["source"]["origin"]) == ("Porto", "api")
    assert [h["text"] for h in corrected["history"]] == ["I live in Lisbon"]
    # another memory of the same exclusive attribute supersedes it, as a newer statement would
    assert remember(api, user, "moved", "I moved to Braga").status_code == 200
    items = {m["key"]: m for m in api.get(f"/users/{user}/memories").json()["items"]}
    assert items["home"]["value"]["status"] == "retracted"
    assert items["home"]["value"]["superseded_by"] == "moved"
    found = api.get(f"/users/{user}/memories", params={"q": "where do I live"}).json()
    assert [m["key"] for m in found["items"]] == ["moved"]  # a retracted memory has no vector
    explicit = api.put(
        f"/users/{user}/memories/badge",
        json={"value": {"text": "badge 42", "attribute": "badge number", "value": "42",
                        "exclusive": True, "tags": ["work"]}},
    )  # fmt: skip
    assert explicit.status_code == 200, explicit.text
    badge = explicit.json()["value"]
    assert (badge["attribute"], badge["value"], badge["tags"]) == ("badge number", "42", ["work"])


def nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": {"n": 2**63}}, "value.n"),
        ({"value": {"a": {"b": [1, -(2**64)]}}}, "value.a.b[1]"),
        ({"value": nested(20)}, "value" + ".x" * 16),
        ({"value": {"$set": {"a": 1}}}, "value"),
        ({"value": {"text": "x" * 70_000}}, "value"),
        ({"value": {"text": "I like tea", "history": []}}, "value.history"),
        ({"value": {"text": "I like tea", "negated": "yes"}}, "value.negated"),
        ({"value": {"text": "I like tea", "attribute": 7}}, "value.attribute"),
    ],
)
def test_values_mongodb_cannot_hold_or_beyond_the_bounds_are_422_naming_the_field(
    api: httpx.Client, body: dict[str, object], field: str
) -> None:
    user = new_user(api)
    response = api.put(f"/users/{user}/memories/k", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    store = api.put("/store/items", json={"namespace": ["bounds", user], "key": "k", **body})
    if "text" not in str(body):  # the store API keeps any JSON object within the bounds
        assert store.status_code == 422, store.text
        assert store.json()["field"] == field
    assert api.get(f"/users/{user}/memories").json()["total"] == 0


def test_numbers_and_sizes_json_allows_but_the_server_cannot_are_422(api: httpx.Client) -> None:
    user = new_user(api)
    not_finite = api.put(
        f"/users/{user}/memories/k",
        content=b'{"value": {"f": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert not_finite.status_code == 422, not_finite.text
    assert not_finite.json()["field"] == "value.f"
    huge_ttl = api.put(f"/users/{user}/memories/k", json={"value": {}, "ttl_minutes": 1e300})
    assert huge_ttl.status_code == 422
    assert huge_ttl.json()["detail"][0]["loc"] == ["body", "ttl_minutes"]
    for body, loc in [
        ({"namespace_prefix": [user], "offset": 10**20}, "offset"),
        ({"namespace_prefix": [user], "filter": {"n": 2**70}}, "filter.n"),
        ({"namespace_prefix": ["l"] * 40}, "namespace_prefix"),
    ]:
        response = api.post("/store/items/search", json=body)
        assert response.status_code == 422, response.text
        named = response.json().get("field") or response.json()["detail"][0]["loc"][1]
        assert named == loc
    deep = api.put(
        f"/users/{user}/memories/k",
        content=b'{"value": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert deep.status_code in {400, 422}, deep.text


def test_store_api_bodies_name_the_bad_field() -> None:
    ok = StoreItemPut.model_validate({"namespace": ["u", "m"], "key": "k", "value": {"a": 1}})
    assert ok.namespace == ["u", "m"]
    bad_bodies: list[tuple[type[BaseModel], dict[str, object], str]] = [
        (StoreItemPut, {"namespace": ["a.b"], "key": "k", "value": {}}, "namespace"),
        (StoreItemPut, {"namespace": [], "key": "k", "value": {}}, "namespace"),
        (StoreItemPut, {"namespace": ["u", 7], "key": "k", "value": {}}, "namespace"),
        (StoreItemPut, {"namespace": ["u"], "key": "", "value": {}}, "key"),
        (StoreItemPut, {"namespace": ["u"], "key": "k", "value": [1]}, "value"),
        (StoreItemsSearch, {"namespace_prefix": ["x."]}, "namespace_prefix"),
        (StoreItemsSearch, {"limit": 0}, "limit"),
        (StoreNamespacesList, {"max_depth": 0}, "max_depth"),
    ]
    for model, body, field in bad_bodies:
        with pytest.raises(ValidationError) as error:
            model.model_validate(body)
        assert error.value.errors()[0]["loc"][0] == field, (model.__name__, body)


def test_embedded_mongodb_stops_with_the_server_and_memories_survive_a_restart(
    database_url: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "mongo" / "nx-27017.pid"
    settings = make_settings(database_url, tmp_path, migrate_on_start=False)
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=30) as api:
        assert api.get("/healthz").json()["dependencies"]["mongodb"]["kind"] == "embedded"
        user = new_user(api)
        assert remember(api, user, "allergy", "I'm allergic to peanuts").status_code == 200
        pid = int(pid_file.read_text())
        os.kill(pid, 0)  # running
    assert not pid_file.exists()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)

    restarted = make_settings(database_url, tmp_path, migrate_on_start=False)
    with running_server(restarted) as url, httpx.Client(base_url=url, timeout=30) as api:
        found = api.get(f"/users/{user}/memories", params={"q": "food to avoid"}).json()
        assert [m["key"] for m in found["items"]] == ["allergy"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
