"""`switchboard memory reindex` rebuilds lost memory vectors from MongoDB, same results after."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.cli import main
from server.memory_cli import open_memory_only
from server.settings import Settings
from tests.integration.memory_support import FACTS, nx_server

QUERY = "what food should I avoid?"
PROJECT = Path(__file__).resolve().parents[2] / "langgraph.json"


async def _seed_and_search(settings: Settings) -> list[tuple[str, float]]:
    async with open_memory_only(settings) as store:
        for i, fact in enumerate(FACTS):
            await store.aput(("cli-user", "memories"), f"m{i}", {"text": fact})
        found = await store.asearch(("cli-user",), query=QUERY, limit=5)
        assert store.vectors is not None
        await store.vectors.recreate()  # the vectors are lost; MongoDB still has everything
        assert await store.asearch(("cli-user",), query=QUERY) == []
        return [(r.key, round(r.score or 0.0, 5)) for r in found]


async def _search(settings: Settings) -> list[tuple[str, float]]:
    async with open_memory_only(settings) as store:
        found = await store.asearch(("cli-user",), query=QUERY, limit=5)
        return [(r.key, round(r.score or 0.0, 5)) for r in found]


def test_reindex_command_restores_identical_search_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with nx_server(tmp_path / "nx") as nx:
        monkeypatch.chdir(tmp_path)  # no stray .env
        monkeypatch.setenv("MONGODB_URI", nx.uri)
        monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("MEMORY_DATABASE", "reindex_cli")
        monkeypatch.setenv("LANGGRAPH_CONFIG", str(PROJECT))  # the index its store.index names
        settings = Settings()
        before = asyncio.run(_seed_and_search(settings))
        assert before[0][0] == "m0"

        assert main(["memory", "reindex"]) == 0
        assert f"reindexed {len(FACTS)} of {len(FACTS)} memories" in capsys.readouterr().out
        assert asyncio.run(_search(settings)) == before
