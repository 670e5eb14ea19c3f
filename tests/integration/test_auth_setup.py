"""Who may call is decided at startup: open on loopback only (and said so), a public HOST without
authentication refuses to start naming the settings, `AUTH=none` overrides, and a key, a JWT
setting or an auth.py turns authentication on."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.auth.contract import AuthSetupError
from server.auth.setup import AuthSetup, describe, is_loopback, resolve_auth
from server.config import load_project, read_project
from stores.sql.database import open_database
from tests.integration.auth_support import BUILTIN_PROJECT, CUSTOM_PROJECT, make_keys
from tests.support import ROOT, make_settings, scratch_database


def _resolve(database_url: str, tmp_path: Path, project: Path, **settings: Any) -> AuthSetup:
    values = make_settings(database_url, tmp_path, langgraph_config=project, **settings)
    loaded = load_project(read_project(project))

    async def go() -> AuthSetup:
        async with open_database(database_url, pool_size=1, max_overflow=0) as db:
            return await resolve_auth(values, loaded, db)

    return asyncio.run(go())


def test_loopback_names() -> None:
    assert all(map(is_loopback, ("127.0.0.1", "127.8.9.1", "localhost", "::1", "[::1]")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "192.168.1.4", "example.com")))


def test_without_auth_a_loopback_server_is_open_and_a_public_one_refuses(
    pg_admin_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with scratch_database(pg_admin_url, "auth_setup_open") as url:
        setup = _resolve(url, tmp_path, BUILTIN_PROJECT)
        assert (setup.mode, setup.authorizer) == ("open", None)
        assert "OPEN" in describe(setup, make_settings(url, tmp_path))
        with pytest.raises(AuthSetupError) as refused:
            _resolve(url, tmp_path, BUILTIN_PROJECT, host="0.0.0.0")
        for setting in ("HOST=0.0.0.0", "switchboard keys create", "AUTH_JWT_SECRET",
                        "AUTH_JWKS_URL", "auth.path", "AUTH=none"):  # fmt: skip
            assert setting in str(refused.value)
        with caplog.at_level(logging.WARNING):
            forced = _resolve(url, tmp_path, BUILTIN_PROJECT, host="0.0.0.0", auth="none")
        assert forced.mode == "open"
        assert "AUTH=none" in caplog.text
        make_keys(url, {"first@example.com": True})
        keyed = _resolve(url, tmp_path, BUILTIN_PROJECT, host="0.0.0.0")
        assert keyed.mode == "builtin"


def test_a_jwt_setting_or_an_auth_py_turns_authentication_on(
    database_url: str, tmp_path: Path
) -> None:
    jwt = _resolve(database_url, tmp_path, BUILTIN_PROJECT, auth_jwt_secret="s" * 32)
    assert jwt.mode == "builtin"
    custom = _resolve(database_url, tmp_path, CUSTOM_PROJECT, host="0.0.0.0")
    assert custom.mode == "custom"
    with pytest.raises(AuthSetupError, match=r"AUTH=builtin and langgraph\.json's auth\.path"):
        _resolve(database_url, tmp_path, CUSTOM_PROJECT, auth="builtin")
    with pytest.raises(AuthSetupError, match="AUTH_JWT_ALGORITHMS"):
        _resolve(
            database_url,
            tmp_path,
            BUILTIN_PROJECT,
            auth_jwt_secret="s" * 32,
            auth_jwt_algorithms=["RS256"],
        )


def test_serve_on_a_public_host_without_auth_stops_naming_the_settings(
    pg_admin_url: str, tmp_path: Path
) -> None:
    with scratch_database(pg_admin_url, "auth_setup_serve") as url:
        result = subprocess.run(
            [sys.executable, "-m", "server.cli", "serve", "--host", "0.0.0.0", "--port", "0",
             "--config", str(BUILTIN_PROJECT)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "DATA_DIR": str(tmp_path),
                 "INGEST_SAMPLES_ON_START": "false"},
            check=False,
        )  # fmt: skip
    assert result.returncode != 0
    assert "HOST=0.0.0.0 is not a loopback address" in result.stderr + result.stdout
    assert "AUTH=none" in result.stderr + result.stdout
