"""Fixtures of the integration tests: a second server that only follows, and the local
OpenAI-compatible fake server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.openai_fake import FakeOpenAI, running_fake_openai, settings_for
from tests.support import TEST_GRAPHS, make_settings, running_server


@pytest.fixture(scope="module")
def follower_url(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, server_url: str
) -> Iterator[str]:
    """A second server on the module's database (after its `server_url`) that runs nothing:
    it can only follow what the first one runs."""
    settings = make_settings(
        database_url,
        tmp_path_factory.mktemp("follower"),
        migrate_on_start=False,
        run_workers=0,
        langgraph_config=TEST_GRAPHS,
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[tuple[str, FakeOpenAI]]:
    """A fake OpenAI-compatible server for the module: its `/v1` URL and the fake."""
    with running_fake_openai() as served:
        yield served


@pytest.fixture(scope="module")
def openai_server_url(
    database_url: str, data_dir: Path, fake_openai: tuple[str, FakeOpenAI]
) -> Iterator[str]:
    """A server of the module whose OpenAI-compatible endpoint is the fake one."""
    base_url, _ = fake_openai
    with running_server(settings_for(database_url, data_dir, base_url)) as url:
        yield url
