"""Custom auth as LangGraph's documentation writes it: tokens name users, every thread and cron
is stamped with its owner and filtered by it, store namespaces start with the user, and
assistants are shared (everyone reads them; their creator changes them)."""

from typing import Any

from langgraph_sdk import Auth

# A toy token table, as in LangGraph's tutorial (a real one asks an identity provider).
VALID_TOKENS = {
    "user1-token": {"id": "user1", "name": "Alice"},
    "user2-token": {"id": "user2", "name": "Bob"},
}

auth = Auth()


@auth.authenticate
async def get_current_user(authorization: str | None) -> Auth.types.MinimalUserDict:
    """Check the bearer token and say who it belongs to."""
    assert authorization
    scheme, token = authorization.split()
    assert scheme.lower() == "bearer"
    if token not in VALID_TOKENS:
        raise Auth.exceptions.HTTPException(status_code=401, detail="Invalid token")
    user = VALID_TOKENS[token]
    return {"identity": user["id"], "display_name": user["name"], "permissions": ["me"]}


@auth.on
async def add_owner(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str]:
    """Make resources private to their creator, using the resource metadata."""
    filters = {"owner": ctx.user.identity}
    metadata = value.setdefault("metadata", {})
    metadata.update(filters)
    return filters


@auth.on.assistants
async def shared_assistants(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> Any:
    """Assistants are shared: everyone reads them; only their creator changes them."""
    if ctx.action in ("read", "search"):
        return None
    if ctx.action == "create":
        value.setdefault("metadata", {})["owner"] = ctx.user.identity
        return None
    return {"owner": ctx.user.identity}


@auth.on.store()
async def authorize_store(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    """The first element of a store namespace is the user it belongs to."""
    namespace: tuple[str, ...] = value["namespace"]
    assert namespace[0] == ctx.user.identity, "Not authorized"
