"""Who is calling: the user an authenticator returned, normalised to LangGraph's `BaseUser`
(identity, display name, permissions, authenticated; item access to every field), and its
JSON form, which a run keeps so that it executes as its creator in any process."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
from langgraph_sdk.auth.types import StudioUser

STUDIO_IDENTITY = "langgraph-studio-user"
MAX_IDENTITY = 200


class AuthUser(Mapping[str, Any]):
    """A caller as LangGraph's handlers and graphs see it: `.identity`, `.permissions`,
    `.display_name`, `.is_authenticated`, and `user["..."]` for these and any other field the
    authenticator returned."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        identity = fields.get("identity")
        if not isinstance(identity, str) or not identity:
            raise ValueError("a user needs a non-empty string identity")
        if len(identity) > MAX_IDENTITY:
            raise ValueError(f"a user identity is at most {MAX_IDENTITY} characters")
        permissions = fields.get("permissions") or ()
        if isinstance(permissions, str) or not isinstance(permissions, Sequence):
            raise ValueError("a user's permissions are a list of strings")
        self._fields: dict[str, Any] = {
            **fields,
            "identity": identity,
            "display_name": str(fields.get("display_name") or identity),
            "is_authenticated": bool(fields.get("is_authenticated", True)),
            "permissions": [str(p) for p in permissions],
        }

    @property
    def identity(self) -> str:
        """The user's unique id."""
        return str(self._fields["identity"])

    @property
    def display_name(self) -> str:
        """How to call the user."""
        return str(self._fields["display_name"])

    @property
    def is_authenticated(self) -> bool:
        """Whether the user proved who they are (Studio's user on loopback did not)."""
        return bool(self._fields["is_authenticated"])

    @property
    def permissions(self) -> list[str]:
        """The permissions the authenticator granted."""
        return list(self._fields["permissions"])

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"AuthUser(identity={self.identity!r})"

    def dict(self) -> builtins.dict[str, Any]:
        """The user's fields (as LangGraph's users offer)."""
        return builtins.dict(self._fields)

    def to_json(self) -> builtins.dict[str, Any]:
        """The fields that are JSON (what a run keeps of its creator)."""
        kept: builtins.dict[str, Any] = {}
        for key, value in self._fields.items():
            try:
                orjson.dumps(value)
            except TypeError:
                continue
            kept[key] = value
        return kept


class StudioAuthUser(AuthUser, StudioUser):
    """LangGraph Studio's user: an `AuthUser` that is also langgraph-sdk's `StudioUser`, so a
    handler's `isinstance(ctx.user, Auth.types.StudioUser)` recognises it."""


def studio_user() -> AuthUser:
    """LangGraph Studio's user on a loopback server that lets Studio in without a key."""
    return StudioAuthUser(
        {"identity": STUDIO_IDENTITY, "kind": "StudioUser", "is_authenticated": False}
    )


def from_json(fields: Mapping[str, Any]) -> AuthUser:
    """The user a run (or cron) kept: Studio's user comes back as a `StudioUser`."""
    if fields.get("kind") == "StudioUser":
        return StudioAuthUser(fields)
    return AuthUser(fields)


def to_user(result: Any) -> AuthUser:
    """The user an authenticator returned: an identity string, a dict with `identity`, an
    object with an `identity` attribute (permissions, display name ... read alike), or a
    `(permissions, user)` pair.

    Raises:
        ValueError: it is none of these (the message says what is needed).
    """
    permissions: Any = None
    if isinstance(result, tuple) and len(result) == 2:
        permissions, result = result
    if isinstance(result, AuthUser):
        fields: dict[str, Any] = result.dict()
    elif isinstance(result, str):
        fields = {"identity": result}
    elif isinstance(result, Mapping):
        fields = dict(result)
    elif hasattr(result, "identity"):
        fields = {
            name: getattr(result, name)
            for name in ("identity", "display_name", "is_authenticated", "permissions")
            if hasattr(result, name)
        }
        if isinstance(result, StudioUser):
            fields["kind"] = "StudioUser"
        extra = getattr(result, "dict", None)
        if callable(extra):
            with_extra = extra()
            if isinstance(with_extra, Mapping):
                fields = {**with_extra, **fields}
    else:
        raise ValueError(
            "the authenticator must return an identity string, a dict with 'identity', or "
            f"an object with an identity attribute; it returned a {type(result).__name__}"
        )
    if permissions is not None:
        fields["permissions"] = list(permissions)
    return AuthUser(fields)


def is_studio(user: Any) -> bool:
    """Whether `user` is LangGraph Studio's (ours, or langgraph-sdk's `StudioUser`)."""
    return isinstance(user, StudioUser)
