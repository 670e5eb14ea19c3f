"""The built-in authenticator: API keys made, listed and revoked by `switchboard keys` (only their
hash kept), JWTs signed with the HS256 secret or by a JWKS key, and runs that execute as their
creator (LangGraph's `langgraph_auth_user`, and the memory namespace of /chat turns)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from server.cli import main
from tests.integration.auth_support import BUILTIN_PROJECT, client_with_key, make_keys
from tests.support import make_settings, running_server

SECRET = "a-test-secret-of-at-least-32-bytes!"
ASK: Any = {"messages": [{"role": "user", "content": "who am I?"}]}


def _token(
    claims: dict[str, Any], *, key: Any = SECRET, algorithm: str = "HS256", **header: Any
) -> str:
    payload = {"exp": int(time.time()) + 600, **claims}
    return jwt.encode(payload, key, algorithm=algorithm, headers=header or None)


@pytest.fixture(scope="module")
def keyed_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """A server of the built-in authenticator that checks keys on every request and accepts
    HS256 JWTs."""
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        langgraph_config=BUILTIN_PROJECT,
        auth_jwt_secret=SECRET,
        auth_cache_s=0,
    )
    with running_server(settings) as url:
        yield url


def test_keys_are_shown_once_kept_hashed_listed_and_revoked(
    database_url: str,
    keyed_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MIGRATE_ON_START", "false")
    assert main(["keys", "create", "--user", "Ada@Example.com", "--name", "laptop"]) == 0
    created = capsys.readouterr().out
    key = created.strip().splitlines()[-1]
    assert key.startswith("sb_")
    assert "new user Ada@Example.com" in created
    key_id = key.split("_")[1]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT key_hash, name FROM api_keys WHERE key_id = %s", (key_id,))
        key_hash, name = stored.fetchone() or ("", "")
        dumped = conn.execute("SELECT row_to_json(k)::text FROM api_keys k").fetchall()
    assert (len(key_hash), name) == (64, "laptop")
    assert all(key not in row[0] and key.split("_", 2)[2] not in row[0] for row in dumped)

    with client_with_key(keyed_url, key) as ada:
        (me,) = ada.get("/users").json()["items"]
        assert me["email"] == "Ada@Example.com"
    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing
    assert key not in listing
    assert "Ada@Example.com" in listing
    assert listing.splitlines()[1].split()[4] != "-"  # last used: just now

    assert main(["keys", "create", "--user", "ada@example.com"]) == 0
    assert "for user Ada@Example.com" in capsys.readouterr().out  # same user, another key
    assert main(["keys", "revoke", key_id]) == 0
    assert "revoked" in capsys.readouterr().out
    with client_with_key(keyed_url, key) as ada:
        refused = ada.get("/users")
    assert refused.status_code == 401
    assert "not valid" in refused.json()["detail"]
    assert main(["keys", "revoke", key_id]) == 0
    assert "already revoked" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="key nope not found"):
        main(["keys", "revoke", "nope"])


def test_a_key_of_another_secret_or_a_forged_one_gets_nothing(keyed_url: str) -> None:
    with httpx.Client(base_url=keyed_url) as http:
        for headers in (
            {"Authorization": "Bearer sb_0123456789ab_" + "A" * 43},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"X-Api-Key": "sb_short"},
            {},
        ):
            response = http.post("/threads/search", json={}, headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer"


def test_jwts_signed_with_the_secret_name_the_caller(keyed_url: str) -> None:
    good = _token({"sub": "ext-7", "name": "Grace", "permissions": ["reader"]})
    with client_with_key(keyed_url, good) as grace:
        values = grace.post("/runs/wait", json={"assistant_id": "whoami", "input": ASK}).json()
        assert (values["who"], values["permissions"]) == ("ext-7", ["reader"])
        thread = grace.post("/threads", json={}).json()
        assert thread["metadata"]["owner"] == "ext-7"
    for bad in (
        _token({"sub": "ext-7"}, key="another-secret-of-at-least-32-bytes"),
        _token({"sub": "ext-7", "exp": int(time.time()) - 3600}),
        _token({"name": "nobody"}),
        jwt.encode({"sub": "ext-7"}, SECRET, algorithm="HS256"),  # no expiry
    ):
        with client_with_key(keyed_url, bad) as intruder:
            assert intruder.post("/threads/search", json={}).status_code == 401


def test_an_admin_sees_and_runs_on_everything_as_themselves(
    database_url: str, keyed_url: str
) -> None:
    keys = make_keys(database_url, {"zoe@example.com": False, "boss@example.com": True})
    with (
        client_with_key(keyed_url, keys["zoe@example.com"]) as zoe,
        client_with_key(keyed_url, keys["boss@example.com"]) as boss,
    ):
        thread = zoe.post("/threads", json={"metadata": {"about": "zoe"}}).json()["thread_id"]
        assert boss.get(f"/threads/{thread}").json()["metadata"]["about"] == "zoe"
        (boss_me,) = [
            u for u in boss.get("/users").json()["items"] if u["email"] == "boss@example.com"
        ]
        values = boss.post(
            f"/threads/{thread}/runs/wait", json={"assistant_id": "whoami", "input": ASK}
        ).json()
        assert (values["who"], values["permissions"]) == (boss_me["id"], ["admin"])
        assert (
            boss.patch("/assistants/whoami", json={"metadata": {"by": "admin"}}).status_code == 200
        )
        assert zoe.patch("/assistants/whoami", json={"name": "zoe's"}).status_code == 403
        assert zoe.get("/assistants/whoami").json()["metadata"]["by"] == "admin"


class _Jwks(BaseHTTPRequestHandler):
    """Serves one JSON Web Key Set (the test's identity provider)."""

    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def test_jwts_signed_by_a_key_of_the_jwks_url_are_accepted(
    database_url: str, tmp_path: Path
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    _Jwks.body = json.dumps(
        {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}
    ).encode()
    provider = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    try:
        settings = make_settings(
            database_url,
            tmp_path,
            migrate_on_start=False,
            langgraph_config=BUILTIN_PROJECT,
            auth_jwks_url=f"http://127.0.0.1:{provider.server_port}/jwks.json",
            auth_jwt_audience="switchboard",
            auth_jwt_issuer="https://idp.example",
        )
        with running_server(settings) as url:
            claims = {"sub": "idp-user", "aud": "switchboard", "iss": "https://idp.example"}
            signed = _token(claims, key=private, algorithm="RS256", kid="k1")
            with client_with_key(url, signed) as user:
                values = user.post("/runs/wait", json={"assistant_id": "whoami", "input": ASK})
                assert values.json()["who"] == "idp-user"
            wrong_audience = _token(
                {**claims, "aud": "other"}, key=private, algorithm="RS256", kid="k1"
            )
            hmac_with_public = _token(claims, key=SECRET, kid="k1")  # alg confusion
            for token in (wrong_audience, hmac_with_public):
                with client_with_key(url, token) as intruder:
                    assert intruder.post("/threads/search", json={}).status_code == 401
    finally:
        provider.shutdown()


def test_a_chat_turn_remembers_for_whoever_sent_it_not_the_conversations_user(
    database_url: str, keyed_url: str
) -> None:
    keys = make_keys(database_url, {"owen@example.com": False, "chief@example.com": True})
    with (
        client_with_key(keyed_url, keys["owen@example.com"]) as owen,
        client_with_key(keyed_url, keys["chief@example.com"]) as chief,
    ):
        (owen_me,) = owen.get("/users").json()["items"]
        chief_id = next(
            u["id"]
            for u in chief.get("/users").json()["items"]
            if u["email"] == "chief@example.com"
        )
        agent = owen.post("/agents", json={"name": "helper", "tools": []}).json()["id"]
        conversation = owen.post(
            "/conversations", json={"user_id": owen_me["id"], "agent_id": agent}
        ).json()["id"]
        # The admin speaks in owen's conversation: the fact is the admin's, not owen's.
        said = chief.post(
            "/chat/invoke", json={"conversation_id": conversation, "message": "I live in Lisbon."}
        )
        assert said.status_code == 200, said.text
        assert said.json()["status"] == "success"
        texts = [
            m["value"]["text"] for m in chief.get(f"/users/{chief_id}/memories").json()["items"]
        ]
        assert texts == ["I live in Lisbon"]
        assert owen.get(f"/users/{owen_me['id']}/memories").json()["items"] == []
        told = owen.post(
            "/chat/invoke", json={"conversation_id": conversation, "message": "I live in Porto."}
        )
        assert told.json()["status"] == "success"
        owens = [
            m["value"]["text"] for m in owen.get(f"/users/{owen_me['id']}/memories").json()["items"]
        ]
        assert owens == ["I live in Porto"]
    # A caller with no user row (a JWT subject) still remembers as themselves, never "anonymous".
    with client_with_key(keyed_url, _token({"sub": "ext-9"})) as ext:
        said = ext.post(
            "/runs/wait",
            json={"assistant_id": "chat", "input": {"messages": [
                {"role": "user", "content": "I live in Oslo."}]},
                  "context": {"tools": [], "memory_policy": "auto"}},
        )  # fmt: skip
        assert said.status_code == 200, said.text
        found = ext.post("/store/items/search", json={"namespace_prefix": ["ext-9"]}).json()
        assert [item["value"]["text"] for item in found["items"]] == ["I live in Oslo"]
        assert (
            ext.post("/store/items/search", json={"namespace_prefix": ["anonymous"]}).status_code
            == 403
        )


def test_a_crons_runs_execute_as_its_creator(database_url: str, tmp_path: Path) -> None:
    keys = make_keys(database_url, {"cora@example.com": False, "dan@example.com": False})
    settings = make_settings(
        database_url,
        tmp_path,
        migrate_on_start=False,
        langgraph_config=BUILTIN_PROJECT,
        cron_poll_interval_s=0.2,
        cron_min_interval_s=1,
    )
    with (
        running_server(settings) as url,
        client_with_key(url, keys["cora@example.com"]) as cora,
        client_with_key(url, keys["dan@example.com"]) as dan,
    ):
        (me,) = cora.get("/users").json()["items"]
        thread = cora.post("/threads", json={}).json()["thread_id"]
        cron = cora.post(
            f"/threads/{thread}/runs/crons",
            json={"assistant_id": "whoami", "schedule": "* * * * * */1", "input": ASK},
        )
        assert cron.status_code == 200, cron.text
        deadline = time.monotonic() + 60
        while not [
            r for r in cora.get(f"/threads/{thread}/runs").json() if r["status"] == "success"
        ]:
            assert time.monotonic() < deadline, "the cron never fired"
            time.sleep(0.2)
        assert cora.delete(f"/runs/crons/{cron.json()['cron_id']}").status_code == 204
        assert cora.get(f"/threads/{thread}/state").json()["values"]["who"] == me["id"]
        assert dan.get(f"/threads/{thread}/runs").status_code == 404
