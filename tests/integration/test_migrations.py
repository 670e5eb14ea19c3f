"""Migrations go up and down cleanly, and concurrent servers migrate one at a time."""

from __future__ import annotations

import subprocess
import sys
import threading

import psycopg
import pytest

from stores import migrate
from stores.sql.database import libpq_url
from tests.support import scratch_database

TABLES = {"users", "agents", "conversations", "messages", "runs", "documents", "tools"}


def _tables(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {name for (name,) in rows}


def test_upgrade_then_downgrade_to_base_and_back(pg_admin_url: str) -> None:
    with scratch_database(pg_admin_url, "migrations_updown", migrated=False) as url:
        assert migrate.current_revision(url) is None
        migrate.upgrade(url)
        assert migrate.current_revision(url) == migrate.head_revision()
        assert _tables(url) >= TABLES

        migrate.downgrade(url, "base")
        assert migrate.current_revision(url) is None
        assert _tables(url) & TABLES == set()

        migrate.upgrade(url)
        assert _tables(url) >= TABLES


def test_upgrade_is_idempotent(pg_admin_url: str) -> None:
    with scratch_database(pg_admin_url, "migrations_twice") as url:
        migrate.upgrade(url)
        assert migrate.current_revision(url) == migrate.head_revision()


def test_servers_starting_together_migrate_one_at_a_time(pg_admin_url: str) -> None:
    script = "import sys; from stores import migrate; migrate.upgrade(sys.argv[1])"
    with scratch_database(pg_admin_url, "migrations_race", migrated=False) as url:
        processes = [
            subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE)
            for _ in range(3)
        ]
        for process in processes:
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr.decode()
        assert migrate.current_revision(url) == migrate.head_revision()


def test_threads_in_one_process_migrate_one_at_a_time(pg_admin_url: str) -> None:
    with scratch_database(pg_admin_url, "migrations_threads", migrated=False) as url:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                migrate.upgrade(url)
            except BaseException as error:  # collected and asserted on below
                errors.append(error)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        assert migrate.current_revision(url) == migrate.head_revision()


def test_messages_table_matches_the_seed_design(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url)) as conn:
        default = conn.execute(
            "SELECT column_default FROM information_schema.columns "
            "WHERE table_name = 'messages' AND column_name = 'id'"
        ).fetchone()
        assert default == ("gen_random_uuid()",)
        conn.execute("INSERT INTO users (email, name) VALUES ('seed@example.com', 'S')")
        conn.execute(
            "INSERT INTO conversations (user_id) "
            "SELECT id FROM users WHERE email = 'seed@example.com'"
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO messages (conversation_id, sender, content) "
                "SELECT id, 'robot', 'x' FROM conversations LIMIT 1"
            )
        conn.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO messages (conversation_id, sender, content) "
                "VALUES (gen_random_uuid(), 'user', 'x')"
            )
