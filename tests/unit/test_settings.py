"""Settings: defaults that need nothing, and errors that name the bad variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.settings import Settings
from stores.sql.database import libpq_url, sqlalchemy_url


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "PORT", "HOST", "QDRANT_URL", "MONGODB_URI"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_body_bytes == 1024 * 1024


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:5432/app")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.port == 9001
    assert settings.database_url == "postgres://u:p@db:5432/app"


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "70000"), ("DATABASE_URL", "mysql://x/y"), ("MAX_BODY_BYTES", "10")],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert name.lower() in str(info.value)


def test_database_urls_are_normalised_per_driver() -> None:
    assert sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sqlalchemy_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert libpq_url("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(ValueError, match="scheme"):
        sqlalchemy_url("sqlite:///x.db")
