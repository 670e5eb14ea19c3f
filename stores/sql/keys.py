"""API keys of the built-in authenticator: made (shown once), verified, listed, revoked.

A key reads `sb_<key_id>_<secret>` (the secret: 32 random bytes, URL-safe). Only the SHA-256 of
the whole key is stored; `key_id` finds the row and the hashes are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, text, update

from stores.errors import InvalidInputError, NotFoundError
from stores.sql.database import Database
from stores.sql.models import ApiKey, User

PREFIX = "sb_"
_KEY = re.compile(r"^sb_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
LAST_USED_EVERY_S = 60  # `last_used_at` is written at most this often per key


def key_hash(key: str) -> str:
    """The SHA-256 (hex) a key is stored as."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = _KEY.match(key)
    return match["key_id"] if match else None


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Who a valid key belongs to."""

    key_id: str
    user_id: uuid.UUID
    email: str
    name: str
    admin: bool


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as `switchboard keys list` shows it (never the key itself)."""

    key_id: str
    email: str
    admin: bool
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


async def create_key(
    db: Database, *, email: str, admin: bool = False, name: str = ""
) -> tuple[str, KeyInfo, bool]:
    """Make a key for the user with `email` (created when new); returns the key (to show once),
    its record, and whether the user was created."""
    email = email.strip()
    if "@" not in email or len(email) > 320:
        raise InvalidInputError(f"{email!r} is not an email address", field="user")
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    async with db.sessions.begin() as session:
        # One user per email, whatever its case; concurrent creations queue on the lock.
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(func.lower(email)))))
        user = await session.scalar(select(User).where(func.lower(User.email) == email.lower()))
        created = user is None
        if user is None:
            user = User(email=email, name=email.split("@", 1)[0][:200], metadata_={})
            session.add(user)
            await session.flush()
        row = ApiKey(
            key_id=key_id, user_id=user.id, key_hash=key_hash(key), admin=admin, name=name[:200]
        )
        session.add(row)
        await session.flush()
        info = KeyInfo(key_id, user.email, admin, row.name, row.created_at, None, None)
    return key, info, created


async def verify_key(db: Database, key: str) -> KeyOwner | None:
    """The owner of `key` if it is a live key (not revoked, its user not deleted), else None.

    Notes the key's last use (at most once a minute).
    """
    key_id = parse_key(key)
    if key_id is None:
        return None
    async with db.sessions() as session:
        row = (
            await session.execute(
                select(ApiKey, User)
                .join(User, User.id == ApiKey.user_id)
                .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
            )
        ).first()
    if row is None:
        return None
    api_key, user = row
    if not hmac.compare_digest(api_key.key_hash, key_hash(key)):
        return None
    async with db.sessions.begin() as session:
        await session.execute(
            update(ApiKey)
            .where(
                ApiKey.key_id == key_id,
                or_(
                    ApiKey.last_used_at.is_(None),
                    ApiKey.last_used_at
                    < func.now() - text(f"interval '{LAST_USED_EVERY_S} seconds'"),
                ),
            )
            .values(last_used_at=func.now())
        )
    return KeyOwner(key_id, user.id, user.email, user.name, api_key.admin)


async def list_keys(db: Database, *, email: str | None = None) -> Sequence[KeyInfo]:
    """Every key (of the user with `email`, when given), newest first."""
    stmt = select(ApiKey, User.email).join(User, User.id == ApiKey.user_id)
    if email is not None:
        stmt = stmt.where(func.lower(User.email) == email.strip().lower())
    stmt = stmt.order_by(ApiKey.created_at.desc(), ApiKey.key_id)
    async with db.sessions() as session:
        rows = (await session.execute(stmt)).all()
    return [
        KeyInfo(
            key.key_id,
            owner_email,
            key.admin,
            key.name,
            key.created_at,
            key.last_used_at,
            key.revoked_at,
        )
        for key, owner_email in rows
    ]


async def revoke_key(db: Database, key_id: str) -> bool:
    """Revoke a key by id (or by the whole key); False if it was revoked already.

    Raises:
        NotFoundError: no key with that id.
    """
    wanted = parse_key(key_id) or key_id.strip()
    async with db.sessions.begin() as session:
        row = await session.get(ApiKey, wanted, with_for_update=True)
        if row is None:
            raise NotFoundError("key", wanted, field="key_id")
        if row.revoked_at is not None:
            return False
        row.revoked_at = func.now()
        return True


async def any_keys(db: Database) -> bool:
    """Whether any live key exists (the built-in authenticator is then on by default)."""
    async with db.sessions() as session:
        found = await session.scalar(
            select(ApiKey.key_id).where(ApiKey.revoked_at.is_(None)).limit(1)
        )
    return found is not None
