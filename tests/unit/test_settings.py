"""Settings: defaults that need nothing, and errors that name the bad variable."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from nodes.context import context_from
from server.runs.context import model_spec
from server.settings import Settings, settings_problems
from stores.sql.database import libpq_url, sqlalchemy_url
from stores.sql.models import Agent


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


def test_keys_are_secret_strings_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-real")
    monkeypatch.setenv("QDRANT_API_KEY", "qd-real")
    monkeypatch.setenv("AUTH_JWT_SECRET", "jwt-real-" + "x" * 32)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    shown = f"{settings!r} {settings} {settings.model_dump()} {settings.model_dump_json()}"
    for secret in ("sk-openai-real", "qd-real", "jwt-real-"):
        assert secret not in shown
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-openai-real"
    spec = model_spec(Agent(name="a", graph_id="chat", model={"provider": "openai"}), settings)
    assert spec.api_key is not None
    assert spec.api_key.get_secret_value() == "sk-openai-real"  # the model gets the real key
    assert "sk-openai-real" not in repr(spec)
    assert "sk-openai-real" not in repr(context_from({"model": {"api_key": "sk-openai-real"}}))


def test_settings_problems_name_variables_but_not_values() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, database_url="mysql://u:hunter2@db/x", port="p4ss")  # type: ignore[call-arg, arg-type]
    problems = settings_problems(raised.value)
    assert "DATABASE_URL" in problems
    assert "PORT" in problems
    assert "hunter2" not in problems
    assert "p4ss" not in problems


@pytest.mark.parametrize("convert", [sqlalchemy_url, libpq_url])
def test_a_url_without_scheme_is_refused_without_echoing_it(convert: Callable[[str], str]) -> None:
    with pytest.raises(ValueError, match="not a database URL") as refused:
        convert("admin:hunter2@db.internal/app")
    assert "hunter2" not in str(refused.value)
