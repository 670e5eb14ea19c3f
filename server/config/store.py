"""langgraph.json's `store`: which embedder, dimension and fields the memory store indexes with,
and when its items expire. A project that says nothing gets the server's settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.embeddings import Embeddings
from langgraph.store.base.embed import ensure_embeddings

from server.config.schema import StoreConfig
from server.settings import Settings
from stores.embeddings import MINILM_DIMENSION, open_embedder

# How `store.index.embed` names the offline model (the name langchain's init_embeddings knows).
MINILM_EMBED = "huggingface:sentence-transformers/all-MiniLM-L6-v2"
MINILM_ALIASES = frozenset({MINILM_EMBED, "huggingface:all-MiniLM-L6-v2"})


class StoreConfigError(ValueError):
    """`store` asks for something the server cannot give (the message names the key)."""


@dataclass(frozen=True, slots=True)
class StoreSetup:
    """What langgraph.json's `store` asks of the memory store (None: the server's setting)."""

    embed: str | None = None
    custom_embedder: Embeddings | None = None  # an imported `./file.py:function` embed
    dims: int | None = None
    fields: tuple[str, ...] | None = None
    default_ttl_minutes: float | None = None
    refresh_on_read: bool = True
    sweep_interval_s: float | None = None


def store_setup(config: StoreConfig | None, *, import_embed: Callable[[str], Any]) -> StoreSetup:
    """Resolve `store`; `import_embed` imports a `./file.py:function` embed reference.

    Raises:
        StoreConfigError: the embed reference names nothing the server can embed with.
    """
    if config is None:
        return StoreSetup()
    setup: dict[str, Any] = {}
    if config.index is not None:
        embed = config.index.embed
        setup.update(embed=embed, dims=config.index.dims)
        # LangGraph embeds the whole value ("$") when an index names no fields.
        setup["fields"] = tuple(config.index.fields or ["$"])
        if ".py:" in embed:
            try:
                setup["custom_embedder"] = ensure_embeddings(import_embed(embed))
            except Exception as error:
                raise StoreConfigError(
                    f"store.index.embed {embed!r} could not be loaded: "
                    f"{type(error).__name__}: {error}"
                ) from error
        elif embed in MINILM_ALIASES:
            if config.index.dims != MINILM_DIMENSION:
                raise StoreConfigError(
                    f"store.index.dims is {config.index.dims}, but {embed} gives "
                    f"{MINILM_DIMENSION}-dimensional vectors"
                )
        elif not (embed.startswith("openai:") and len(embed) > len("openai:")):
            raise StoreConfigError(
                f"store.index.embed {embed!r} is not an embedder Switchboard has: use "
                f"'openai:<model>', '{MINILM_EMBED}' (the offline model) or "
                "'./file.py:function'"
            )
    if config.ttl is not None:
        setup["default_ttl_minutes"] = config.ttl.default_ttl
        setup["refresh_on_read"] = config.ttl.refresh_on_read
        if config.ttl.sweep_interval_minutes is not None:
            setup["sweep_interval_s"] = config.ttl.sweep_interval_minutes * 60
    return StoreSetup(**setup)


@dataclass(frozen=True, slots=True)
class MemoryIndex:
    """How the memory store embeds: the embedder, its vector size and the fields it embeds."""

    embedder: Embeddings
    dimension: int
    fields: tuple[str, ...]


def memory_index(
    setup: StoreSetup,
    settings: Settings,
    *,
    server_embedder: Embeddings,
    server_dimension: int,
    server_model: str,
) -> MemoryIndex:
    """The memory store's index: `store.index` when the project has one, else the server's
    embedder with MEMORY_INDEX_FIELDS. The server's embedder is reused when it is the one asked.
    """
    fields = setup.fields or tuple(settings.memory_index_fields)
    if setup.embed is None or setup.dims is None:
        return MemoryIndex(server_embedder, server_dimension, fields)
    if setup.custom_embedder is not None:
        return MemoryIndex(setup.custom_embedder, setup.dims, fields)
    if setup.embed in MINILM_ALIASES:
        if settings.embeddings_provider == "minilm":
            return MemoryIndex(server_embedder, server_dimension, fields)
        embedder, dimension, _ = open_embedder(
            provider="minilm",
            backend=settings.embeddings_backend,
            quantize=settings.embeddings_quantize,
            cache_dir=settings.models_dir or settings.data_dir / "models",
        )
        return MemoryIndex(embedder, dimension, fields)
    model = setup.embed.removeprefix("openai:")
    if (settings.embeddings_provider, server_model, server_dimension) == (
        "openai",
        model,
        setup.dims,
    ):
        return MemoryIndex(server_embedder, server_dimension, fields)
    try:
        embedder, dimension, _ = open_embedder(
            provider="openai",
            openai_api_key=settings.openai_api_key,
            openai_base_url=settings.openai_base_url,
            openai_model=model,
            openai_dimension=setup.dims,
        )
    except ValueError as error:
        raise StoreConfigError(f"store.index.embed {setup.embed!r}: {error}") from error
    return MemoryIndex(embedder, dimension, fields)
