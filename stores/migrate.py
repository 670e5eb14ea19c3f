"""Apply and revert the Alembic migrations in stores/migrations, programmatically."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from stores.sql.database import sqlalchemy_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Alembic's `context` is process-global: migrations in one process run one at a time.
# Across processes, env.py takes a PostgreSQL advisory lock.
_PROCESS_LOCK = threading.Lock()


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and at the database `url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = sqlalchemy_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` (serialised by an advisory lock)."""
    with _PROCESS_LOCK:
        command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (`base` removes every table)."""
    with _PROCESS_LOCK:
        command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision in stores/migrations."""
    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at, or None before the first migration."""
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
