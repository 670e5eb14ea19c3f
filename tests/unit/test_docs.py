"""The README and .env.example stay true: every setting is documented in both."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in text]
    assert missing == [], f"{document} does not mention {missing}"


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make run" in text.split("## ", 2)[1]
    assert "make test" in text.split("## ", 2)[1]


def test_env_example_is_a_valid_configuration() -> None:
    settings = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    assert settings.database_url is None
    assert settings.port == 8000
