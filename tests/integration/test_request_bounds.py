"""Values no store can hold are a 422 naming the field, never a 5xx or "database unavailable":
numbers beyond what PostgreSQL's JSONB or MongoDB hold, NUL characters, JSON nested too deep,
and offsets, limits and depths past their bounds (a huge offset once gave a 503)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DataError

from server.errors import install_error_handlers
from tests.integration.helpers import create_user
from tests.integration.test_runs_events import OVER_LIMIT_BYTES, refusing_over_limit
from tests.support import installed


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def _assert_names(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert field in response.text, response.text
    assert "unavailable" not in response.text


# Raw JSON: 1e400 parses to infinity, which PostgreSQL's JSONB refuses.
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/assistants/search", '{"metadata": {"n": 1e400}}', "metadata"),
        ("/assistants/count", '{"metadata": {"n": 1e400}}', "metadata"),
        ("/threads/search", '{"metadata": {"n": -1e400}}', "metadata"),
        ("/threads/count", '{"values": {"n": 1e400}}', "values"),
        ("/runs/crons/search", '{"metadata": {"n": 1e400}}', "metadata"),
        ("/assistants/search", '{"metadata": {"s": "a\\u0000b"}}', "metadata"),
        ("/threads/search", '{"metadata": {"k\\u0000": 1}}', "metadata"),
        ("/threads", '{"metadata": {"n": 123456789012345678901234567890}}', "metadata"),
        ("/assistants", '{"graph_id": "chat", "config": {"n": 1e400}}', "config"),
        ("/runs/wait", '{"assistant_id": "chat", "input": {"n": 99999999999999999999}}', "input"),
    ],
)
def test_values_no_store_can_hold_are_a_422_naming_the_field(
    api: httpx.Client, path: str, body: str, field: str
) -> None:
    response = api.post(path, content=body, headers={"Content-Type": "application/json"})
    _assert_names(response, field)


def test_large_but_storable_numbers_still_filter(api: httpx.Client) -> None:
    response = api.post("/assistants/search", json={"metadata": {"n": 8.3e274}})
    assert response.status_code == 200, response.text
    assert response.json() == []


def test_json_nested_too_deep_is_a_422(api: httpx.Client) -> None:
    response = api.post("/threads", json={"metadata": _nested(40)})
    _assert_names(response, "metadata")
    assert api.post("/threads", json={"metadata": _nested(20)}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/assistants/search", {"offset": 10**12}),
        ("POST", "/threads/search", {"offset": 10**12}),
        ("POST", "/runs/crons/search", {"offset": 10**12}),
        ("POST", "/assistants/search", {"limit": 10**6}),
        ("POST", "/store/items/search", {"offset": 10**12}),
        ("POST", "/store/namespaces", {"max_depth": 10**6}),
        ("POST", "/store/namespaces", {"offset": 10**12}),
    ],
)
def test_offsets_limits_and_depths_are_bounded(
    api: httpx.Client, method: str, path: str, body: dict[str, Any]
) -> None:
    response = api.request(method, path, json=body)
    _assert_names(response, next(iter(body)))


def test_huge_offset_of_a_listing_is_a_422(api: httpx.Client) -> None:
    thread = api.post("/threads", json={}).json()["thread_id"]
    response = api.get(f"/threads/{thread}/runs", params={"offset": 10**12})
    _assert_names(response, "offset")
    _assert_names(api.get("/users", params={"offset": 10**12}), "offset")


def test_a_memory_wider_than_8_bytes_is_a_422(api: httpx.Client) -> None:
    user = create_user(api)["id"]
    response = api.put(
        f"/users/{user}/memories/k",
        content=json.dumps({"value": {"n": 2**70}}),
        headers={"Content-Type": "application/json"},
    )
    _assert_names(response, "value")


def test_store_items_declare_their_namespace_and_key_rules(api: httpx.Client) -> None:
    ok = api.put("/store/items", json={"namespace": ["a", "b"], "key": "k", "value": {"x": 1}})
    assert ok.status_code == 204, ok.text
    _assert_names(api.get("/store/items", params={"key": "k"}), "namespace")
    _assert_names(api.get("/store/items", params={"namespace": "a..b", "key": "k"}), "namespace")
    bad_label = {"namespace": ["a.b"], "key": "k", "value": {}}
    _assert_names(api.put("/store/items", json=bad_label), "namespace")
    _assert_names(
        api.request("DELETE", "/store/items", json={"namespace": [], "key": "k"}), "namespace"
    )
    schema = api.get("/openapi.json").json()
    label = schema["components"]["schemas"]["StoreItemPut"]["properties"]["namespace"]
    assert label["items"]["pattern"]
    assert label["minItems"] == 1


def test_the_document_states_the_chat_target_rule(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    schema = document["components"]["schemas"]
    for path in ("/chat", "/chat/invoke"):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        refs = [form["$ref"].rsplit("/", 1)[1] for form in body["schema"]["oneOf"]]
        assert refs == ["ChatToConversation", "ChatToNewConversation"]
    forms = [schema["ChatToConversation"], schema["ChatToNewConversation"]]
    assert [form["type"] for form in forms] == ["object", "object"]
    assert [form["additionalProperties"] for form in forms] == [False, False]
    assert [sorted(form["required"]) for form in forms] == [
        ["conversation_id", "message"],
        ["agent_id", "message", "user_id"],
    ]
    patch = schema["UserUpdate"]["properties"]["name"]
    assert "anyOf" not in patch
    assert patch["type"] == "string"
    both = {
        "conversation_id": str(uuid.uuid4()),
        "user_id": str(uuid.uuid4()),
        "agent_id": str(uuid.uuid4()),
        "message": "hi",
    }
    _assert_names(api.post("/chat/invoke", json=both), "user_id")
    half = {"user_id": str(uuid.uuid4()), "message": "hi"}
    _assert_names(api.post("/chat/invoke", json=half), "agent_id")
    not_objects: list[Any] = [0, [], "hi", None]
    for not_an_object in not_objects:
        refused = api.post("/chat/invoke", json=not_an_object)
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"] == ["body"]
    blank = {"conversation_id": str(uuid.uuid4()), "message": "   "}
    _assert_names(api.post("/chat/invoke", json=blank), "message")


async def test_a_database_data_error_is_the_clients_422_not_an_outage() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise DataError("SELECT 1", {}, psycopg.errors.NumericValueOutOfRange("bigint"))

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom")
    assert response.status_code == 422
    assert "bigint" not in response.text  # the database's own text stays in the log
    assert "unavailable" not in response.text


def test_a_value_over_postgresqls_limits_is_a_413_not_an_outage(
    api: httpx.Client, database_url: str
) -> None:
    """A value PostgreSQL refuses as over one of its limits (program_limit_exceeded, class 54,
    which psycopg raises as an OperationalError; here a thread's metadata over 64 KiB, refused
    by a trigger with PostgreSQL's own error, as one over JSONB's 256 MiB would be) fails the
    same way when sent again: a 413 with a fixed message, not a 503 telling the client to
    retry, and none of the database's text."""
    install = refusing_over_limit(
        "sb_thread_metadata_over_limit",
        "INSERT ON conversations",
        "octet_length(NEW.metadata::text)",
    )
    drop = "DROP TRIGGER sb_thread_metadata_over_limit ON conversations"
    with installed(database_url, install, drop):
        response = api.post("/threads", json={"metadata": {"note": "x" * OVER_LIMIT_BYTES}})
        small = api.post("/threads", json={"metadata": {"note": "x"}})
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == (
        "a value of the request is too large for the database to store"
    )
    assert "requested length" not in response.text
    assert "Retry-After" not in response.headers
    assert small.status_code == 200, small.text


@pytest.mark.parametrize(
    ("state", "status", "detail"),
    [
        ("22023", 422, "a value of the request is out of the range the database can hold"),
        ("23505", 409, "the write conflicts with existing data"),
        ("54001", 413, "a value of the request is too large for the database to store"),
        ("55P03", 503, "the database is unavailable; try again shortly"),  # a lock timeout
        ("57014", 503, "the database is unavailable; try again shortly"),  # statement timeout
        ("42703", 500, "internal server error"),  # a statement of ours it cannot run: a bug
    ],
)
def test_a_statement_postgresql_refuses_answers_by_its_sqlstate_class(
    api: httpx.Client, database_url: str, state: str, status: int, detail: str
) -> None:
    """Only an outage is a 503: a refusal of what the request holds is the client's 4xx (a data
    exception 422, a constraint 409 as the stores' own conflicts, a limit 413), a refusal of
    the server's own statement a 500; never with the database's text."""
    name = f"sb_raise_{uuid.uuid4().hex}"
    install = f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.metadata ? 'sb_raise' THEN
    RAISE EXCEPTION 'sb secret database text' USING ERRCODE = NEW.metadata->>'sb_raise';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER {name} BEFORE INSERT ON conversations FOR EACH ROW EXECUTE FUNCTION {name}();
"""
    drop = f"DROP TRIGGER {name} ON conversations; DROP FUNCTION {name}()"
    with installed(database_url, install, drop):
        response = api.post("/threads", json={"metadata": {"sb_raise": state}})
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert "sb secret" not in response.text


async def test_the_drivers_own_errors_are_answered_as_sqlalchemys() -> None:
    """An error psycopg raises unwrapped (where a store uses the driver directly) is answered
    like SQLAlchemy's wrapper of it: an outage 503, a value over PostgreSQL's limits 413."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/cut")
    async def cut() -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    @app.get("/too-large")
    async def too_large() -> None:
        raise psycopg.errors.ProgramLimitExceeded("requested length too large")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        down, large = await client.get("/cut"), await client.get("/too-large")
    assert down.status_code == 503
    assert large.status_code == 413
    assert "requested length" not in large.text
