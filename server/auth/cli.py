"""`switchboard keys create|list|revoke`: the built-in authenticator's API keys."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TypeVar

from server.resources import database_url
from server.settings import load_settings
from stores import migrate
from stores.errors import StoreError
from stores.sql import keys as key_store
from stores.sql.database import Database, open_database

T = TypeVar("T")


@asynccontextmanager
async def _database(url: str) -> AsyncIterator[Database]:
    async with open_database(url, pool_size=1, max_overflow=0) as db:
        yield db


def _run(work: Callable[[Database], Awaitable[T]]) -> T:
    settings = load_settings()
    with database_url(settings) as url:
        if settings.migrate_on_start:
            migrate.upgrade(url)

        async def go() -> T:
            async with _database(url) as db:
                return await work(db)

        try:
            return asyncio.run(go())
        except StoreError as error:
            raise SystemExit(f"switchboard keys: {error}") from error


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Make an API key for the user with EMAIL (the user is created when new) and print it once:
    only its hash is kept. Send it as `Authorization: Bearer <key>`."""
    key, info, created = _run(
        lambda db: key_store.create_key(db, email=args.user, admin=args.admin, name=args.name)
    )
    who = "new user" if created else "user"
    role = "admin key" if info.admin else "key"
    print(f"{role} {info.key_id} for {who} {info.email} (shown once; keep it secret):")
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    """List the keys (never the keys themselves): id, user, admin, created, last used, revoked."""
    rows = _run(lambda db: key_store.list_keys(db, email=args.user))
    if not rows:
        print("no keys")
        return 0
    print(f"{'key id':<14} {'user':<32} {'admin':<5} {'created':<16} {'last used':<16} revoked")
    for row in rows:
        print(
            f"{row.key_id:<14} {row.email[:32]:<32} {'yes' if row.admin else 'no':<5} "
            f"{_when(row.created_at):<16} {_when(row.last_used_at):<16} {_when(row.revoked_at)}"
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    """Revoke a key by its id (or the key itself); servers stop accepting it within
    AUTH_CACHE_S seconds."""
    revoked = _run(lambda db: key_store.revoke_key(db, args.key_id))
    print(f"key {args.key_id} revoked" if revoked else f"key {args.key_id} was already revoked")
    return 0


def add_keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys create|list|revoke` to the `switchboard` command."""
    keys = sub.add_parser("keys", help="manage API keys of the built-in authenticator")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="make a key", description=cmd_keys_create.__doc__)
    create.add_argument("--user", required=True, metavar="EMAIL", help="whose key it is")
    create.add_argument("--admin", action="store_true", help="an admin key: sees everything")
    create.add_argument("--name", default="", help="a label to tell keys apart")
    create.set_defaults(func=cmd_keys_create)
    listing = actions.add_parser("list", help="list keys", description=cmd_keys_list.__doc__)
    listing.add_argument("--user", metavar="EMAIL", help="only this user's keys")
    listing.set_defaults(func=cmd_keys_list)
    revoke = actions.add_parser("revoke", help="revoke a key", description=cmd_keys_revoke.__doc__)
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (from `keys list`)")
    revoke.set_defaults(func=cmd_keys_revoke)
