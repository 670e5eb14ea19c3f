"""A LangGraph project folder is served unchanged by `switchboard serve --config` and by
`langgraph dev`: the same assistant ids, the same run results, the same store search and the
same custom route, driven with langgraph-sdk over HTTP.

The project (tests/projects/notes) has a compiled graph loaded by file path (`echo`), an async
context-manager factory loaded by module path (`notes`), `env`, `store.index` with its own embed
function, and `http.app`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client

from tests.support import LANGGRAPH, SWITCHBOARD, free_port, langgraph_dev, served_by

PROJECT = Path(__file__).resolve().parents[1] / "projects" / "notes"
NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")  # langgraph-api's
NOTES = {
    "n-boots": "hiking boots of waterproof leather",
    "n-bread": "sourdough bread needs a starter and patience",
    "n-taxes": "the tax return is due in april",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project folder (what a user has), served by both servers."""
    if not LANGGRAPH.exists():
        pytest.skip("langgraph-cli[inmem] is not installed (pip install -e '.[dev]')")
    folder = tmp_path_factory.mktemp("byo") / "notes"
    shutil.copytree(PROJECT, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder / "langgraph.json"


def _without_project_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "NOTES_GREETING"}


@pytest.fixture(scope="module")
def switchboard(
    project: Path, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`switchboard serve --config <project>/langgraph.json`, started from another folder."""
    work = tmp_path_factory.mktemp("switchboard")
    port = free_port()
    env = {
        **_without_project_env(),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(work / "data"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MIGRATE_ON_START": "false",
        "INGEST_SAMPLES_ON_START": "false",
        "LOG_LEVEL": "warning",
    }
    url = f"http://127.0.0.1:{port}"
    command = [str(SWITCHBOARD), "serve", "--config", str(project)]
    with served_by(command, cwd=work, env=env, log=work / "serve.log", url=url):
        yield url


@pytest.fixture(scope="module")
def dev(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`langgraph dev` serving the same folder."""
    log = tmp_path_factory.mktemp("langgraph-dev") / "dev.log"
    os.environ.pop("NOTES_GREETING", None)
    with langgraph_dev(project, log=log) as url:
        yield url


async def exercise(url: str) -> dict[str, Any]:
    """What a client sees of the project: assistants, runs, state, store search, custom route."""
    client = get_client(url=url)
    assistants = sorted(
        (a["assistant_id"], a["graph_id"], a["name"], a["description"])
        for a in await client.assistants.search(metadata={"created_by": "system"}, limit=50)
    )
    echoes = []
    for key, text in NOTES.items():
        thread = await client.threads.create()
        output = await client.runs.wait(
            thread["thread_id"], "echo", input={"key": key, "text": text}
        )
        state: Any = await client.threads.get_state(thread["thread_id"])
        echoes.append((output, state["values"], state["next"]))
    found = await client.runs.wait(
        None,
        "notes",
        input={"query": "what does bread need"},
        config={"configurable": {"limit": 2}},
    )
    items = await client.store.search_items(["notes"], query="leather boots for hiking", limit=3)
    async with httpx.AsyncClient(base_url=url) as http:
        custom = (await http.get("/notes/greeting")).json()
    return {
        "assistants": assistants,
        "echoes": echoes,
        "found": found,
        "search": [(item["key"], item["value"]) for item in items["items"]],
        "custom": custom,
    }


async def test_the_project_gives_the_same_assistants_and_results_as_under_langgraph_dev(
    switchboard: str, dev: str
) -> None:
    ours, theirs = await exercise(switchboard), await exercise(dev)
    assert ours == theirs
    description = "Echoes a note with the project's greeting and files it in the store."
    assert set(ours["assistants"]) == {
        (str(uuid.uuid5(NAMESPACE_GRAPH, "echo")), "echo", "Echo", description),
        (str(uuid.uuid5(NAMESPACE_GRAPH, "notes")), "notes", "notes", None),
    }
    output, values, pending = ours["echoes"][0]
    assert output["reply"] == "hello from langgraph.json: hiking boots of waterproof leather"
    assert values == output
    assert pending == []
    assert ours["found"]["found"][0] == "n-bread"
    assert len(ours["found"]["found"]) == ours["found"]["limit"] == 2  # configurable.limit
    assert ours["search"][0][0] == "n-boots"
    assert ours["custom"] == {"greeting": "hello from langgraph.json"}
