"""Who may call, decided once at startup: the project's auth.py, the built-in authenticator, or
nobody checked (open) — which only a loopback HOST, or `AUTH=none` said out loud, allows."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Literal

from server.auth.builtin import build_builtin_auth, jwt_verifier
from server.auth.contract import Authorizer, AuthSetupError
from server.config import Project
from server.settings import Settings
from stores.sql.database import Database
from stores.sql.keys import any_keys

log = logging.getLogger(__name__)

Mode = Literal["open", "builtin", "custom"]
STUDIO_ORIGIN = "https://smith.langchain.com"


def is_loopback(host: str) -> bool:
    """Whether binding `host` reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class AuthSetup:
    """How this server decides who is calling."""

    mode: Mode
    authorizer: Authorizer | None  # None: open
    loopback: bool
    studio_without_key: bool  # Studio's origin gets in as Studio's user (loopback only)
    custom_routes: bool  # http.app's routes are authenticated too


def _refuse_open(settings: Settings) -> AuthSetupError:
    return AuthSetupError(
        f"HOST={settings.host} is not a loopback address and no authentication is configured, "
        "so the server will not start open to the network. Configure one of: API keys "
        "(`switchboard keys create --user EMAIL`, then AUTH=auto or AUTH=builtin), "
        "AUTH_JWT_SECRET or AUTH_JWKS_URL (JWT bearer tokens), or langgraph.json's auth.path "
        "(your own langgraph_sdk.Auth); or bind HOST=127.0.0.1; or set AUTH=none to serve it "
        "open anyway."
    )


async def resolve_auth(settings: Settings, project: Project, db: Database) -> AuthSetup:
    """The auth of this server, from the settings, langgraph.json and the keys in `db`.

    Raises:
        AuthSetupError: a public HOST with no authentication (the message names the settings),
            or settings that contradict each other.
    """
    loopback = is_loopback(settings.host)
    auth_config = project.file.config.auth
    studio = bool(
        settings.auth_studio_on_loopback
        and loopback
        and not (auth_config is not None and auth_config.disable_studio_auth)
    )
    custom_routes = bool(project.http.enable_custom_route_auth)
    if settings.auth == "none":
        if not loopback:
            log.warning(
                "AUTH=none: serving OPEN on %s, a non-loopback address — anyone who can reach "
                "it can use every API",
                settings.host,
            )
        return AuthSetup("open", None, loopback, False, custom_routes)
    if project.auth is not None:
        if settings.auth == "builtin":
            raise AuthSetupError(
                "AUTH=builtin and langgraph.json's auth.path both name an authenticator; "
                "remove one (AUTH=auto uses auth.path)"
            )
        authorizer = Authorizer(
            project.auth, name=f"auth.path ({auth_config and auth_config.path})"
        )
        uncovered = authorizer.uncovered()
        if uncovered:
            log.warning(
                "auth.path: no handler covers %s; those requests are allowed unfiltered "
                "(add an @auth.on handler to deny by default)",
                ", ".join(uncovered),
            )
        return AuthSetup("custom", authorizer, loopback, studio, custom_routes)
    try:
        verifier = jwt_verifier(settings)
    except ValueError as error:
        raise AuthSetupError(str(error)) from error
    if settings.auth == "builtin" or verifier is not None or await any_keys(db):
        authorizer = Authorizer(build_builtin_auth(db, settings), name="the built-in authenticator")
        return AuthSetup("builtin", authorizer, loopback, studio, custom_routes)
    if not loopback:
        raise _refuse_open(settings)
    return AuthSetup("open", None, loopback, False, custom_routes)


def describe(setup: AuthSetup, settings: Settings) -> str:
    """One line for the startup log saying who may call."""
    if setup.mode == "open":
        return (
            f"OPEN: no authentication is configured, so anyone who can reach {settings.host} "
            "may use every API (create a key with `switchboard keys create --user EMAIL` "
            "and restart to require keys)"
        )
    studio = "; Studio's origin gets in without a key" if setup.studio_without_key else ""
    if setup.mode == "custom":
        return f"authentication: langgraph.json's auth.path{studio}"
    return f"authentication: built-in (API keys, JWT){studio}"
