"""The zero-config start: an embedded PostgreSQL whose data survives a restart."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.integration.helpers import create_agent, create_conversation, create_user
from tests.support import make_settings, running_server


def test_data_survives_a_restart_on_the_embedded_database(tmp_path: Path) -> None:
    settings = make_settings("", tmp_path)
    assert settings.database_url is None

    with running_server(settings) as url, httpx.Client(base_url=url, timeout=30) as api:
        health = api.get("/healthz").json()
        assert health["dependencies"]["postgres"]["kind"] == "embedded"
        user = create_user(api)
        agent = create_agent(api)
        conversation = create_conversation(api, user["id"], agent["id"])
    assert (tmp_path / "postgres" / "PG_VERSION").exists()

    restarted = make_settings("", tmp_path)
    with running_server(restarted) as url, httpx.Client(base_url=url, timeout=30) as api:
        assert api.get(f"/users/{user['id']}").json() == user
        assert api.get(f"/agents/{agent['id']}").json() == agent
        assert api.get(f"/conversations/{conversation['id']}").json() == conversation
