"""Fixtures of the integration tests that talk to the local OpenAI-compatible fake server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.openai_fake import FakeOpenAI, running_fake_openai, settings_for
from tests.support import running_server


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
