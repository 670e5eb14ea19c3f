"""A server on a new MODELS_DIR exports the embedding model at startup, in the background."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from tests.integration.chat_support import stream_chat
from tests.integration.helpers import create_agent, create_conversation, create_user
from tests.support import REPO_PROJECT, SWITCHBOARD, free_port, scratch_database, served_by


def _exported(models: Path) -> list[Path]:
    return list(models.glob("*/model.int8.onnx"))


def test_a_new_models_dir_is_exported_at_startup_without_delaying_it(
    pg_admin_url: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "MODELS_DIR": str(models),
        "LANGGRAPH_CONFIG": str(REPO_PROJECT),
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "INGEST_SAMPLES_ON_START": "false",  # nothing else embeds at startup
        "OFFLINE_TOKEN_DELAY_S": "0",
    }
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with scratch_database(pg_admin_url, "warmup") as database_url:
        env["DATABASE_URL"] = database_url
        with served_by([str(SWITCHBOARD), "serve"], cwd=Path.cwd(), env=env, log=log, url=url):
            # Ready (and answering other routes) while the export still runs: it took tens of
            # seconds of CPU, and startup did not wait for it.
            assert _exported(models) == [], "startup waited for the export"
            with httpx.Client(base_url=url, timeout=60) as api:
                assert api.get("/agents").status_code == 200
                # No request embeds anything, yet the model gets exported.
                deadline = time.monotonic() + 300
                while not _exported(models):
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    time.sleep(0.5)
                agent = create_agent(api, config={"memory_policy": "auto"})
                conversation = create_conversation(api, create_user(api)["id"], agent["id"])
                turns = []
                for message in ("I live in Lisbon.", "Where do I live?"):
                    body = {"conversation_id": conversation["id"], "message": message}
                    turns.append(dict(stream_chat(api, body)))
    assert all("warning" not in events for events in turns), turns
    assert "memory_saved" in turns[0]
    assert any("Lisbon" in memory for memory in turns[1]["memories"]["memories"]), turns[1]
