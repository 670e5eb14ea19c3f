"""The keys of langgraph.json that Switchboard reads, and what it says about the ones it does not.

The models validate what the server acts on (graphs, env, dependencies, store, checkpointer,
http, auth); every other key is kept as an extra and classified by `unsupported_keys`: keys
about building a container image are not applicable to `switchboard serve`, keys of features
Switchboard does not have are warned about, and anything else is an unknown key (a typo).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ConfigModel(BaseModel):
    """A section of langgraph.json: validated fields; keys it does not know are kept as extras."""

    model_config = ConfigDict(extra="allow", frozen=True)


class GraphDef(ConfigModel):
    """A graph given as an object: its import path and a description for its system assistant."""

    path: str = Field(min_length=3, max_length=1000)
    description: str | None = Field(None, max_length=10_000)


class IndexConfig(ConfigModel):
    """`store.index`: how store items are embedded for semantic search."""

    embed: str = Field(min_length=1, max_length=1000)
    dims: int = Field(ge=1, le=65_536)
    fields: list[str] | None = Field(None, min_length=1, max_length=100)


class StoreTTLConfig(ConfigModel):
    """`store.ttl`: when store items expire and how often expired ones are purged."""

    refresh_on_read: bool = True
    default_ttl: float | None = Field(None, gt=0)
    sweep_interval_minutes: float | None = Field(None, gt=0)


class StoreConfig(ConfigModel):
    """`store`: the long-term memory store."""

    index: IndexConfig | None = None
    ttl: StoreTTLConfig | None = None


class ThreadTTLConfig(ConfigModel):
    """`checkpointer.ttl`: the default TTL of new threads and how expired threads are swept."""

    strategy: Literal["delete", "keep_latest"] = "delete"
    default_ttl: float | None = Field(None, gt=0)
    sweep_interval_minutes: float | None = Field(None, gt=0)
    sweep_limit: int | None = Field(None, ge=1, le=100_000)


class CheckpointerConfig(ConfigModel):
    """`checkpointer`: Switchboard's PostgreSQL checkpointer always; only `ttl` is read."""

    ttl: ThreadTTLConfig | None = None


class CorsConfig(ConfigModel):
    """`http.cors`: the arguments of Starlette's CORS middleware (its defaults where unset)."""

    allow_origins: list[str] = Field(default_factory=list, max_length=1000)
    allow_methods: list[str] = Field(default_factory=lambda: ["GET"], max_length=100)
    allow_headers: list[str] = Field(default_factory=list, max_length=1000)
    allow_credentials: bool = False
    allow_origin_regex: str | None = Field(None, max_length=1000)
    expose_headers: list[str] = Field(default_factory=list, max_length=1000)
    max_age: int = Field(600, ge=0, le=86_400 * 7)
    # Starlette's argument too; unset: the ALLOW_PRIVATE_NETWORK setting.
    allow_private_network: bool | None = None


class HttpConfig(ConfigModel):
    """`http`: custom routes, CORS and the switches that remove route groups."""

    app: str | None = Field(None, min_length=3, max_length=1000)
    cors: CorsConfig | None = None
    disable_assistants: bool = False
    disable_threads: bool = False
    disable_runs: bool = False
    disable_store: bool = False
    disable_meta: bool = False
    disable_webhooks: bool = False
    disable_mcp: bool = False
    disable_a2a: bool = False
    disable_ui: bool = False  # no web page for people at / (and /web/*)
    enable_custom_route_auth: bool = False  # authenticate the custom app's routes too


class AuthConfig(ConfigModel):
    """`auth`: the `langgraph_sdk.Auth` object of the project (`path`)."""

    path: str | None = Field(None, min_length=3, max_length=1000)
    # True: Studio's origin never gets in without credentials (AUTH_STUDIO_ON_LOOPBACK).
    disable_studio_auth: bool = False


class LanggraphConfig(ConfigModel):
    """The whole langgraph.json."""

    graphs: dict[str, str | GraphDef] = Field(min_length=1, max_length=1000)
    env: dict[str, str] | str | None = None
    dependencies: list[str] = Field(default_factory=list, max_length=1000)
    python_version: str | None = Field(None, max_length=20)
    store: StoreConfig | None = None
    checkpointer: CheckpointerConfig | None = None
    http: HttpConfig | None = None
    auth: AuthConfig | None = None

    @field_validator("graphs")
    @classmethod
    def _graph_ids(cls, value: dict[str, str | GraphDef]) -> dict[str, str | GraphDef]:
        for graph_id, spec in value.items():
            if not graph_id or len(graph_id) > 200:
                raise ValueError(f"graph id {graph_id!r} must be 1 to 200 characters")
            path = spec if isinstance(spec, str) else spec.path
            if ":" not in path:
                raise ValueError(
                    f"graph {graph_id!r}: path {path!r} names no variable; write "
                    "'./file.py:variable' or 'package.module:variable'"
                )
        return value


# Keys about building a container image (`langgraph build`/`up`): `switchboard serve` runs in
# the environment it is started in, so they do not apply.
NOT_APPLICABLE: dict[str, str] = {
    "$schema": "the JSON schema of the file",
    "api_version": "the langgraph-api image version",
    "base_image": "the image to build from",
    "image_distro": "the image's Linux distribution",
    "pip_config_file": "pip settings of the image build",
    "pip_installer": "the installer of the image build",
    "dockerfile_lines": "extra Dockerfile lines",
    "keep_pkg_tools": "packaging tools kept in the image",
    "source": "the uv project the image is built from",
    "_INTERNAL_docker_tag": "an internal image tag",
}

# Keys of features Switchboard does not have: each is warned about once at startup.
WARNED: dict[str, str] = {
    "node_version": "JavaScript graphs are not served",
    "ui": "generative UI components are not served",
    "ui_config": "generative UI components are not served",
    "encryption": "custom at-rest encryption is not applied",
    "priority": "custom run priorities are not applied",
    "webhooks": "webhook URL policies and headers come from the WEBHOOK_* settings",
    "disable_persistence": "persistence is always on (PostgreSQL)",
    "checkpointer.path": "the checkpointer is always Switchboard's PostgreSQL saver",
    "checkpointer.serde": "the checkpointer's serializer is LangGraph's default",
    "checkpointer.backend": "the checkpointer is always Switchboard's PostgreSQL saver",
    "http.configurable_headers": "request headers are not copied into run configs",
    "http.logging_headers": "access logs are uvicorn's",
    "http.middleware_order": "custom middleware runs inside the custom app only",
    "http.mount_prefix": "the API is served at the root path",
    "http.disable_event_streaming": "there is no v2 event streaming to disable",
    "auth.openapi": "the OpenAPI document does not describe custom auth",
    "auth.cache": "the authenticate function is called on every request",
}


def _extras(model: BaseModel, prefix: str) -> Iterator[tuple[str, Any]]:
    """Each extra key under `model` (recursively) as a dotted path with its value."""
    for key, value in (model.model_extra or {}).items():
        yield f"{prefix}{key}", value
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _extras(value, f"{prefix}{name}.")
        elif isinstance(value, dict):
            for item in value.values():
                if isinstance(item, BaseModel):
                    yield from _extras(item, f"{prefix}{name}.<graph>.")


def unsupported_keys(config: LanggraphConfig) -> tuple[list[str], list[str]]:
    """What to warn about and what does not apply, one message per key present in `config`.

    Returns:
        (warnings, not applicable): warnings name keys Switchboard ignores (features it lacks,
        unknown keys); the second list names the image-build keys.
    """
    warnings: list[str] = []
    not_applicable: list[str] = []
    for path, _ in _extras(config, ""):
        if path in NOT_APPLICABLE:
            not_applicable.append(f"{path} ({NOT_APPLICABLE[path]})")
        elif WARNED.get(path):
            warnings.append(f"{path} is not supported and is ignored: {WARNED[path]}")
        else:
            warnings.append(f"{path} is not a langgraph.json key Switchboard knows; ignored")
    return warnings, not_applicable
