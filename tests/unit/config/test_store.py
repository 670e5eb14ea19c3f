"""langgraph.json's `store`: which embedder, vector size and fields the memory store indexes with,
and the TTL its items get; a project that says nothing keeps the server's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings
from langchain_openai import OpenAIEmbeddings

from server.config.project import import_object
from server.config.schema import StoreConfig
from server.config.store import MINILM_EMBED, StoreConfigError, memory_index, store_setup
from server.settings import Settings
from stores.embeddings import MiniLMEmbeddings, SharedEmbeddings


class Fixed(Embeddings):
    """The server's embedder in these tests: nothing calls it."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError

    def embed_query(self, text: str) -> list[float]:
        raise AssertionError


SERVER = Fixed()


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def setup_of(store: dict[str, Any], root: Path | None = None) -> Any:
    return store_setup(
        StoreConfig.model_validate(store),
        import_embed=lambda ref: import_object(ref, root=root or Path.cwd()),
    )


def index_of(setup: Any, **values: Any) -> Any:
    return memory_index(
        setup,
        settings(**values),
        server_embedder=SERVER,
        server_dimension=384,
        server_model="all-MiniLM-L6-v2",
    )


def test_without_a_store_index_the_server_embedder_and_settings_fields_are_used() -> None:
    index = index_of(store_setup(None, import_embed=lambda ref: None), memory_index_fields=["note"])
    assert (index.embedder, index.dimension, index.fields) == (SERVER, 384, ("note",))


def test_a_custom_embed_function_is_imported_relative_to_the_project(tmp_path: Path) -> None:
    (tmp_path / "emb.py").write_text(
        "def embed(texts):\n    return [[float(len(t)), 1.0] for t in texts]\n", encoding="utf-8"
    )
    index = index_of(setup_of({"index": {"embed": "./emb.py:embed", "dims": 2}}, tmp_path))
    assert index.dimension == 2
    assert index.fields == ("$",)  # LangGraph embeds the whole value when no fields are named
    assert index.embedder.embed_documents(["abc"]) == [[3.0, 1.0]]


def test_the_offline_model_is_the_servers_when_the_server_uses_it() -> None:
    setup = setup_of({"index": {"embed": MINILM_EMBED, "dims": 384, "fields": ["text"]}})
    assert index_of(setup).embedder is SERVER
    other = index_of(setup, embeddings_provider="openai", openai_api_key="sk-test")
    assert isinstance(other.embedder, SharedEmbeddings)
    assert isinstance(other.embedder.inner, MiniLMEmbeddings)
    with pytest.raises(StoreConfigError, match=r"dims is 512, but .* gives 384"):
        setup_of({"index": {"embed": MINILM_EMBED, "dims": 512}})


def test_openai_models_reuse_the_servers_embedder_only_when_it_is_the_same() -> None:
    setup = setup_of({"index": {"embed": "openai:text-embedding-3-large", "dims": 3072}})
    index = index_of(setup, openai_api_key="sk-test")
    assert isinstance(index.embedder, SharedEmbeddings)
    assert isinstance(index.embedder.inner, OpenAIEmbeddings)
    assert (index.embedder.inner.model, index.dimension) == ("text-embedding-3-large", 3072)
    same = memory_index(
        setup,
        settings(embeddings_provider="openai", openai_api_key="sk-test"),
        server_embedder=SERVER,
        server_dimension=3072,
        server_model="text-embedding-3-large",
    )
    assert same.embedder is SERVER
    with pytest.raises(StoreConfigError, match=r"needs OPENAI_API_KEY"):
        index_of(setup)


def test_an_embedder_switchboard_lacks_is_refused_by_name() -> None:
    with pytest.raises(StoreConfigError, match=r"'cohere:embed-english-v3.0' is not an embedder"):
        setup_of({"index": {"embed": "cohere:embed-english-v3.0", "dims": 1024}})


def test_store_ttl_sets_the_default_ttl_refresh_and_sweep_interval() -> None:
    setup = setup_of(
        {"ttl": {"default_ttl": 30, "refresh_on_read": False, "sweep_interval_minutes": 2}}
    )
    assert (setup.default_ttl_minutes, setup.refresh_on_read, setup.sweep_interval_s) == (
        30,
        False,
        120,
    )
