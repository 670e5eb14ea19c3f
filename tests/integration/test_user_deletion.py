"""Deleting a user forgets everything about them: SQL rows and MongoDB memories alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pymongo

from stores.embedded_mongo import embedded_mongo
from tests.integration.helpers import create_user
from tests.support import make_settings, running_server


def test_deleting_a_user_deletes_their_memories(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path)
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=60) as api:
        gone = create_user(api)
        kept = create_user(api)
        for user in (gone, kept):
            stored = api.put(
                f"/users/{user['id']}/memories/diet", json={"value": {"text": "vegetarian"}}
            )
            assert stored.status_code == 200, stored.text
        assert api.delete(f"/users/{gone['id']}").status_code == 204
        assert api.get(f"/users/{gone['id']}/memories").status_code == 404
        assert api.get(f"/users/{kept['id']}/memories").json()["total"] == 1

    # The server (and its embedded MongoDB) has stopped; read what MongoDB kept on disk.
    with embedded_mongo(tmp_path / "mongo") as uri:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
        try:
            items = client[settings.memory_database]["agent_memory"]
            owners = {str(doc["ns"][0]) for doc in items.find({}, {"ns": 1})}
        finally:
            client.close()
    assert owners == {kept["id"]}
