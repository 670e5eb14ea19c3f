"""The `switchboard` command: serve, migrate, seed-users, ingest, reindex, memory, keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy.exc
import uvicorn
from pydantic import ValidationError

from server.auth.cli import add_keys_parser
from server.ingest import add_ingest_parser
from server.memory_cli import add_memory_parser
from server.resources import database_url, mongodb_uri, open_resources
from server.schemas.chat import UserCreate
from server.settings import Settings, load_settings
from server.telemetry.logs import configure_logging
from server.telemetry.metrics import shared_metrics_dir
from stores import migrate
from stores.errors import ConflictError, UnavailableError
from stores.sql import repositories as repo


def _settings(**overrides: Any) -> Settings:
    base = load_settings()
    changes = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=changes) if changes else base


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a LangGraph project (its langgraph.json: --config, else LANGGRAPH_CONFIG) until
    interrupted (Ctrl-C stops the server and the embedded database)."""
    from server.app import create_app
    from server.config import ProjectError, apply_env, load_project, read_project

    settings = _settings(host=args.host, port=args.port)
    config = Path(args.config) if args.config else settings.langgraph_config
    try:
        project_file = read_project(config)
        # The project's `env` is set before anything is imported, and may set our settings too.
        apply_env(project_file)
        settings = _settings(host=args.host, port=args.port, langgraph_config=project_file.path)
        configure_logging(settings.log_level, settings.log_format)
        project = load_project(project_file)
    except ProjectError as error:
        raise SystemExit(f"switchboard serve: {error}") from None
    print(f"Switchboard: serving {project_file.path} with graphs {sorted(project.graphs)}")
    print(f"Switchboard: on http://{settings.host}:{settings.port} (docs at /docs)")
    if not settings.database_url:
        print(f"Switchboard: embedded PostgreSQL with data in {settings.data_dir / 'postgres'}")
    workers = args.workers or settings.workers
    if workers > 1:
        # The workers share a fresh multiprocess directory for their metrics.
        with shared_metrics_dir(workers):
            return _serve_workers(settings, project_file.path, workers)
    uvicorn.run(
        create_app(settings, project=project),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # the handlers of configure_logging (text or JSON) serve uvicorn's
        timeout_keep_alive=settings.http_keep_alive_s,
    )
    return 0


def _serve_workers(settings: Settings, config: Path, workers: int) -> int:
    """`serve --workers N`: N uvicorn worker processes on one port, each with its own pools,
    sharing the PostgreSQL run queue (any process claims any run; NOTIFY wakes them all).

    What one process must own is started here, once: the embedded PostgreSQL and MongoDB
    (when DATABASE_URL / MONGODB_URI are unset) and the migrations. The workers get their
    URLs through the environment. In Qdrant local mode the first worker to open the folder
    holds it; the others run without Qdrant (knowledge and memory vectors answer 503 there),
    so set QDRANT_URL to a Qdrant server to have them everywhere.
    """
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(database_url(settings))
        if settings.migrate_on_start:
            migrate.upgrade(url)
        env = {
            "DATABASE_URL": url,
            "MIGRATE_ON_START": "false",
            "HOST": settings.host,
            "PORT": str(settings.port),
            "LANGGRAPH_CONFIG": str(config),
            "WORKERS": str(workers),
        }
        if not settings.mongodb_uri:
            env["MONGODB_URI"] = stack.enter_context(mongodb_uri(settings))
        os.environ.update(env)
        if not settings.qdrant_url:
            print(
                f"Switchboard: {workers} workers; Qdrant local mode: one of them holds "
                f"{settings.data_dir / 'qdrant'}, the others run without Qdrant "
                "(set QDRANT_URL to share a Qdrant server)"
            )
        uvicorn.run(
            "server.app:create_worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level=settings.log_level,
            log_config=None,  # each worker's create_worker_app configures logging (text/JSON)
            timeout_keep_alive=settings.http_keep_alive_s,
            # A worker answers the supervisor's pings from a thread; importing the graphs and
            # the embedder can hold the GIL for seconds on a busy machine: not a hang.
            timeout_worker_healthcheck=120,
        )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Migrate the database up to a revision (default head), or down with --down."""
    settings = _settings()
    with database_url(settings) as url:
        if args.down is not None:
            migrate.downgrade(url, args.down)
        else:
            migrate.upgrade(url, args.revision)
        print(f"database at revision {migrate.current_revision(url)}")
    return 0


def _read_users(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                return [dict(row) for row in csv.DictReader(handle)]
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:  # a line, not a traceback
        raise SystemExit(
            f"{path}: not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    except (UnicodeDecodeError, csv.Error, OSError) as error:
        raise SystemExit(f"{path}: cannot be read: {error}") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise SystemExit(f"{path}: expected a JSON array of user objects")
    return data


async def _seed_users(settings: Settings, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    users = [UserCreate.model_validate(row) for row in rows]
    created = skipped = 0
    async with open_resources(settings) as resources:
        for user in users:
            try:
                await repo.users.create(resources.database, repo.column_changes(user.model_dump()))
                created += 1
            except ConflictError:
                skipped += 1
    return created, skipped


def cmd_seed_users(args: argparse.Namespace) -> int:
    """Create the users listed in FILE (JSON array or CSV with email,name); existing emails skip."""
    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    rows = _read_users(path)
    try:
        created, skipped = asyncio.run(_seed_users(_settings(), rows))
    except ValidationError as error:
        raise SystemExit(f"{path}: invalid user:\n{error}") from error
    print(f"created {created} users, skipped {skipped} already present")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `switchboard`."""
    parser = argparse.ArgumentParser(
        prog="switchboard", description="Graph-orchestrated AI agents behind a streaming API."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the HTTP API", description=cmd_serve.__doc__)
    serve.add_argument("--host", help="interface to bind (HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (PORT, default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the port and the run queue (WORKERS, default 1)",
    )
    serve.add_argument(
        "--config",
        metavar="PATH",
        help="the project's langgraph.json (LANGGRAPH_CONFIG, default ./langgraph.json)",
    )
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser(
        "migrate", help="apply database migrations", description=cmd_migrate.__doc__
    )
    mig.add_argument("--revision", default="head", help="target revision (default: head)")
    mig.add_argument("--down", metavar="REVISION", help="migrate down to REVISION (`base`: empty)")
    mig.set_defaults(func=cmd_migrate)

    seed = sub.add_parser(
        "seed-users", help="create users from a file", description=cmd_seed_users.__doc__
    )
    seed.add_argument("file", metavar="FILE", help="JSON array of {email, name, metadata} or CSV")
    seed.set_defaults(func=cmd_seed_users)

    add_ingest_parser(sub)
    add_memory_parser(sub)
    add_keys_parser(sub)
    return parser


def _database_failure(error: BaseException) -> str:
    """One line on a database that could not be used: the driver's first line (libpq names
    the host and port, never the password), not a traceback."""
    cause = getattr(error, "orig", None) or error
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return f"the database could not be used (DATABASE_URL): {first}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `switchboard` console script."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (sqlalchemy.exc.OperationalError, psycopg.OperationalError, UnavailableError) as error:
        raise SystemExit(f"switchboard {args.command}: {_database_failure(error)}") from None
    return result


if __name__ == "__main__":
    sys.exit(main())
