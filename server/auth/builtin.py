"""The built-in authenticator, for people without an auth.py: a `langgraph_sdk.Auth` object built
in code, so it goes through the same enforcement as a project's own.

Who: an API key (`switchboard keys create`, sent as `Authorization: Bearer sb_...` or
`X-Api-Key`), or a JWT signed with `AUTH_JWT_SECRET` or by a key of `AUTH_JWKS_URL`.
What: every resource belongs to whoever created it (`metadata.owner`, stamped on create) and
is filtered by it; users see only themselves; a store namespace's first element is its owner;
system assistants and system collections are read by everyone and changed only by admins.
Admins (`--admin` keys, the JWT permission `admin`, Studio's user) see and change everything.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from langgraph_sdk import Auth

from server.auth.caller import ADMIN
from server.auth.jwt import InvalidTokenError, JwtVerifier
from server.auth.users import is_studio
from server.settings import Settings
from stores.sql import keys as key_store
from stores.sql.database import Database

OWNER = "owner"
SYSTEM = {"created_by": "system"}
CACHE_SIZE = 10_000
BEARER_HINT = {"WWW-Authenticate": "Bearer"}


def _refuse(detail: str) -> Auth.exceptions.HTTPException:
    return Auth.exceptions.HTTPException(status_code=401, detail=detail, headers=BEARER_HINT)


class KeyCache:
    """Verified keys, trusted for `ttl_s` seconds (bounded; the oldest go first)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, key_store.KeyOwner]] = OrderedDict()

    def get(self, key: str) -> key_store.KeyOwner | None:
        """The owner of `key` if it was verified less than `ttl_s` ago."""
        entry = self._entries.get(key_store.key_hash(key))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, owner: key_store.KeyOwner) -> None:
        """Remember a verified key."""
        if self.ttl_s <= 0:
            return
        digest = key_store.key_hash(key)
        self._entries[digest] = (time.monotonic() + self.ttl_s, owner)
        self._entries.move_to_end(digest)
        while len(self._entries) > CACHE_SIZE:
            self._entries.popitem(last=False)


def jwt_verifier(settings: Settings) -> JwtVerifier | None:
    """The JWT verifier the settings ask for (None without AUTH_JWT_SECRET / AUTH_JWKS_URL)."""
    if settings.auth_jwt_secret is None and not settings.auth_jwks_url:
        return None
    return JwtVerifier(
        secret=settings.auth_jwt_secret,
        jwks_url=settings.auth_jwks_url or None,
        algorithms=settings.auth_jwt_algorithms,
        audience=settings.auth_jwt_audience,
        issuer=settings.auth_jwt_issuer,
    )


def _token(headers: dict[bytes, bytes]) -> str | None:
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return api_key or None


def _permissions(claim: Any) -> list[str]:
    if isinstance(claim, str):
        return claim.split()
    if isinstance(claim, list):
        return [str(item) for item in claim]
    return []


def _is_admin(ctx: Auth.types.AuthContext) -> bool:
    return ADMIN in ctx.permissions or is_studio(ctx.user)


def _stamp(value: dict[str, Any], identity: str) -> None:
    """Make `identity` the owner of what `value` creates."""
    metadata = value.get("metadata")
    value["metadata"] = {**(metadata if isinstance(metadata, dict) else {}), OWNER: identity}


def _keep_owner(value: dict[str, Any], identity: str) -> None:
    """An update by a non-admin cannot give its object away to someone else."""
    metadata = value.get("metadata")
    if isinstance(metadata, dict) and OWNER in metadata:
        metadata[OWNER] = identity


def build_builtin_auth(db: Database, settings: Settings) -> Auth:
    """The built-in authenticator's `Auth` object (API keys in `db`, JWTs per the settings)."""
    verifier = jwt_verifier(settings)
    cache = KeyCache(settings.auth_cache_s)
    identity_claim = settings.auth_jwt_identity_claim
    permissions_claim = settings.auth_jwt_permissions_claim
    auth = Auth()

    @auth.authenticate
    async def authenticate(headers: dict[bytes, bytes]) -> dict[str, Any]:
        token = _token(headers)
        if token is None:
            raise _refuse("send an API key or a JWT as `Authorization: Bearer <token>`")
        if token.startswith(key_store.PREFIX):
            owner = cache.get(token) or await key_store.verify_key(db, token)
            if owner is None:
                raise _refuse("the API key is not valid (unknown, revoked, or its user is gone)")
            cache.put(token, owner)
            return {
                "identity": str(owner.user_id),
                "display_name": owner.name or owner.email,
                "permissions": [ADMIN] if owner.admin else [],
                "email": owner.email,
                "kind": "api_key",
            }
        if verifier is None:
            raise _refuse("the API key is not valid (keys begin with `sb_`)")
        try:
            claims = await verifier.verify(token)
        except InvalidTokenError as error:
            raise _refuse(f"the token is not valid ({str(error).split(':', 1)[0]})") from None
        identity = claims.get(identity_claim)
        if not isinstance(identity, str | int) or isinstance(identity, bool) or not str(identity):
            raise _refuse(f"the token has no {identity_claim!r} claim naming the caller")
        return {
            "identity": str(identity),
            "display_name": str(claims.get("name") or claims.get("email") or identity),
            "permissions": _permissions(claims.get(permissions_claim)),
        }

    @auth.on
    async def owned(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> Any:
        """Everything belongs to whoever created it; admins see and change everything."""
        identity = ctx.user.identity
        if ctx.action in ("create", "create_run"):
            _stamp(value, identity)
        if _is_admin(ctx):
            return None
        if ctx.action == "create":
            return None
        if ctx.action == "update":
            _keep_owner(value, identity)
        return {OWNER: identity}

    @auth.on.assistants(actions=["read", "search"])
    async def shared_assistants(ctx: Auth.types.AuthContext, value: Any) -> Any:
        """Everyone reads the system assistants; their own ones too."""
        if _is_admin(ctx):
            return None
        return {"$or": [{OWNER: ctx.user.identity}, SYSTEM]}

    @auth.on(resources="collections", actions=["read", "search"])
    async def shared_collections(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> Any:
        """Everyone reads the system collections (the default one, the samples)."""
        if _is_admin(ctx):
            return None
        return {"$or": [{OWNER: ctx.user.identity}, SYSTEM]}

    @auth.on(resources="users")
    async def users(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> Any:
        """Users see only themselves (a user row's owner is its own id)."""
        if _is_admin(ctx):
            return None
        if ctx.action == "create":
            raise Auth.exceptions.HTTPException(
                status_code=403,
                detail="only admins create users (`switchboard keys create --user EMAIL` makes "
                "a user and their key)",
            )
        return {OWNER: ctx.user.identity}

    @auth.on.store
    async def store(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> Any:
        """A namespace's first element is its owner."""
        if _is_admin(ctx):
            return None
        identity = ctx.user.identity
        namespace = tuple(value.get("namespace") or ())
        if ctx.action in ("search", "list_namespaces") and not namespace:
            value["namespace"] = (identity,)
            return None
        if ctx.action == "list_namespaces" and namespace[0] == "*":
            value["namespace"] = (identity, *namespace[1:])
            return None
        if not namespace or namespace[0] != identity:
            raise Auth.exceptions.HTTPException(
                status_code=403,
                detail=f"your store namespaces begin with your identity, {identity!r}",
            )
        return None

    return auth
