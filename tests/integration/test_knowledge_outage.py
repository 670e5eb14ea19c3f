"""With Qdrant unreachable the knowledge base opens, then fails narrowly and stores nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stores.embeddings import SharedEmbeddings
from stores.errors import UnavailableError
from stores.knowledge import KnowledgeBase, open_knowledge
from stores.qdrant import open_qdrant
from stores.sql.database import open_database
from tests.integration.knowledge_support import shared_embedder, unique_collection
from tests.support import free_port


@pytest.fixture(scope="module")
def embedder() -> SharedEmbeddings:
    """The real model, loaded once for the process."""
    return shared_embedder()


@pytest.fixture
async def kb_without_qdrant(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, embedder: SharedEmbeddings
) -> AsyncIterator[KnowledgeBase]:
    """A knowledge base whose QDRANT_URL points at a port nobody listens on."""
    async with (
        open_database(database_url, pool_size=2, max_overflow=0) as database,
        open_qdrant(
            url=f"http://127.0.0.1:{free_port()}", path=tmp_path_factory.mktemp("unused")
        ) as client,
    ):
        # Opening must not raise: the server starts, and /healthz reports Qdrant down.
        yield await open_knowledge(
            client=client, embedder=embedder, database=database, dimension=embedder.dimension
        )


async def test_search_fails_with_unavailable_naming_the_vector_store(
    kb_without_qdrant: KnowledgeBase,
) -> None:
    with pytest.raises(UnavailableError, match="vector store"):
        await kb_without_qdrant.search("anything", collections=["knowledge"])
    with pytest.raises(UnavailableError):
        await kb_without_qdrant.ping()


async def test_ingest_fails_with_unavailable_and_leaves_no_row(
    kb_without_qdrant: KnowledgeBase,
) -> None:
    collection = unique_collection("down")
    with pytest.raises(UnavailableError):
        await kb_without_qdrant.ingest_bytes(
            b"# A\n\nSome text about nothing.", filename="a.md", collection=collection
        )

    page = await kb_without_qdrant.list_documents(collection=collection)
    assert page.total == 0
