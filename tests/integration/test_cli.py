"""The `switchboard` command: help for every subcommand, migrate, seed-users, serve failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from stores import migrate
from stores.sql.database import libpq_url
from tests.support import scratch_database


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize("command", ["serve", "migrate", "seed-users"])
def test_every_subcommand_has_help(command: str) -> None:
    result = _run(command, "--help")
    assert result.returncode == 0
    assert "usage: switchboard" in result.stdout


def test_migrate_up_and_down(pg_admin_url: str, tmp_path: Path) -> None:
    with scratch_database(pg_admin_url, "cli_migrate", migrated=False) as url:
        env = {"DATABASE_URL": url, "DATA_DIR": str(tmp_path)}
        up = _run("migrate", env=env)
        assert up.returncode == 0, up.stderr
        assert f"revision {migrate.head_revision()}" in up.stdout
        down = _run("migrate", "--down", "base", env=env)
        assert down.returncode == 0, down.stderr
        assert migrate.current_revision(url) is None


def test_seed_users_from_json_and_csv_is_idempotent(database_url: str, tmp_path: Path) -> None:
    people = tmp_path / "users.json"
    people.write_text(
        json.dumps(
            [
                {"email": "grace@example.com", "name": "Grace", "metadata": {"team": "navy"}},
                {"email": "alan@example.com", "name": "Alan"},
            ]
        )
    )
    table = tmp_path / "users.csv"
    table.write_text("email,name\nkatherine@example.com,Katherine\nalan@example.com,Alan\n")
    env = {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path)}

    first = _run("seed-users", str(people), env=env)
    assert first.returncode == 0, first.stderr
    assert "created 2 users, skipped 0" in first.stdout
    second = _run("seed-users", str(table), env=env)
    assert "created 1 users, skipped 1" in second.stdout

    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute(
            "SELECT email, metadata FROM users WHERE email LIKE '%@example.com' "
            "AND email IN ('grace@example.com', 'alan@example.com', 'katherine@example.com') "
            "ORDER BY email"
        ).fetchall()
    assert rows == [
        ("alan@example.com", {}),
        ("grace@example.com", {"team": "navy"}),
        ("katherine@example.com", {}),
    ]


def test_seed_users_rejects_a_bad_file_and_writes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"email": "ok@example.org", "name": "Ok"}, {"email": "nope"}]))
    result = _run("seed-users", str(bad), env={"DATABASE_URL": database_url})
    assert result.returncode != 0
    assert "email" in result.stderr
    with psycopg.connect(libpq_url(database_url)) as conn:
        count = conn.execute("SELECT count(*) FROM users WHERE email = 'ok@example.org'").fetchone()
    assert count == (0,)
    missing = _run("seed-users", str(tmp_path / "absent.json"))
    assert missing.returncode != 0
    assert "no such file" in missing.stderr


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("broken.json", b'[{"email": "a@example.org",', "not valid JSON"),
        ("latin1.csv", b"email,name\nz@example.org,Z\xe9\n", "cannot be read"),
    ],
)
def test_seed_users_names_an_unreadable_file_in_one_line(
    tmp_path: Path, name: str, content: bytes, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = _run("seed-users", str(path), env={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"{path}: {says}")


def test_serve_stops_with_one_line_naming_the_graph_that_failed_to_import(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text("raise RuntimeError('OPENAI_API_KEY is not set')\n")
    config = tmp_path / "langgraph.json"
    config.write_text(json.dumps({"graphs": {"agent": "./agent.py:graph"}}))
    # (XDG_RUNTIME_DIR: platformdirs warns on import without one, on machines like CI's.)
    env = {"DATA_DIR": str(tmp_path / "data"), "XDG_RUNTIME_DIR": str(tmp_path)}
    result = _run("serve", "--config", str(config), env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "switchboard serve: graph 'agent' (./agent.py:graph) failed to load: "
        "RuntimeError: OPENAI_API_KEY is not set"
    ]


def test_serve_without_a_project_file_says_how_to_give_one(tmp_path: Path) -> None:
    result = _run("serve", env={"LANGGRAPH_CONFIG": str(tmp_path / "langgraph.json")})
    assert result.returncode == 1
    assert "no langgraph.json there" in result.stderr
    assert "--config PATH" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [("memory", "reindex"), ("reindex",)])
def test_vector_commands_beside_a_running_server_say_so_in_local_mode(
    database_url: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    from qdrant_client import QdrantClient

    holder = QdrantClient(path=str(tmp_path / "qdrant"))  # as a running server holds it
    try:
        env = {"DATA_DIR": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
        env["DATABASE_URL"] = database_url
        result = _run(*command, env=env)
    finally:
        holder.close()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "is open in another process (a running server?)" in result.stderr


@pytest.mark.parametrize(
    "command", [("migrate",), ("keys", "list"), ("seed-users", "users.json"), ("reindex",)]
)
def test_an_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    (tmp_path / "users.json").write_text('[{"email": "u@example.org", "name": "U"}]')
    args = [str(tmp_path / a) if a.endswith(".json") else a for a in command]
    env = {
        "DATABASE_URL": "postgresql://nobody:hunter2@127.0.0.1:1/none",  # nothing listens
        "DATA_DIR": str(tmp_path),
        "XDG_RUNTIME_DIR": str(tmp_path),
    }
    result = _run(*args, env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"switchboard {command[0]}: the database could not be used")
    assert "port 1 failed" in last


@pytest.mark.parametrize("command", [("migrate",), ("keys", "list"), ("memory", "reindex")])
def test_invalid_settings_are_named_without_their_values(command: tuple[str, ...]) -> None:
    env = {
        "DATABASE_URL": "mysql://admin:hunter2@db.internal/app",
        "PORT": "not-a-port-s3cret",
    }
    result = _run(*command, env=env)
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr
    assert "PORT" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "s3cret" not in result.stderr + result.stdout
