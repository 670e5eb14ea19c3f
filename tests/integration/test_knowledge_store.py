"""The knowledge base on real PostgreSQL, real Qdrant local mode and the real MiniLM model."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import math
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models
from sqlalchemy.exc import DBAPIError

from nodes.context import AgentContext
from nodes.tools.knowledge_search import KNOWLEDGE_SEARCH
from nodes.tools.registry import ToolEnv
from stores import qdrant as qdrant_module
from stores import sparse
from stores.embeddings import SharedEmbeddings
from stores.errors import UnavailableError
from stores.extract import DocumentTooLargeError, UnreadableDocumentError, UnsupportedTypeError
from stores.knowledge import (
    BODY,
    COLLECTION_PREFIX,
    DENSE,
    REBUILD_PREFIX,
    SPARSE,
    DimensionMismatchError,
    KnowledgeBase,
    StaleCollectionError,
    document_uuid,
    open_knowledge,
    point_id,
)
from stores.qdrant import open_qdrant, qdrant_call
from stores.sql.database import open_database
from stores.sql.models import Document
from tests.integration.knowledge_support import (
    all_points,
    make_pdf,
    open_kb,
    shared_embedder,
    unique_collection,
)

VOLCANO = (
    "Volcanoes form where magma from the Earth's mantle reaches the surface. Lava, ash and "
    "gases erupt through vents; Mount Etna in Sicily erupts several times a year."
)
BAKING = (
    "Sourdough bread rises thanks to a starter of wild yeast and lactic acid bacteria. The dough "
    "ferments slowly overnight before it is baked in a very hot oven."
)
CHESS = (
    "In chess, castling moves the king two squares towards a rook, and the rook jumps to the "
    "other side of the king. It is the only move in which two pieces move at once."
)
HTML_PAGE = f"""<!doctype html>
<html><head><title>Volcano facts</title><style>p {{ color: red; }}</style>
<script>var secret = "do not index this script";</script></head>
<body><h1>Volcanoes</h1><p>{VOLCANO}</p><!-- a comment --><p>Tags &amp; entities go.</p>
</body></html>"""

FORMATS = {
    "notes.txt": VOLCANO.encode(),
    "notes.md": f"# Volcanoes\n\n{VOLCANO}\n\n## More\n\n- lava\n- ash\n".encode(),
    "notes.html": HTML_PAGE.encode(),
    "notes.pdf": make_pdf([VOLCANO[:90], VOLCANO[90:]], title="Volcano facts"),
}


@pytest.fixture(scope="module")
def embedder() -> SharedEmbeddings:
    """The real model, loaded once for the process."""
    return shared_embedder()


@pytest.fixture
async def kb(
    database_url: str, tmp_path: Path, embedder: SharedEmbeddings
) -> AsyncIterator[KnowledgeBase]:
    """A knowledge base on this module's database and a fresh local Qdrant."""
    async with open_kb(database_url, tmp_path / "qdrant") as knowledge:
        yield knowledge


@pytest.mark.parametrize("filename", sorted(FORMATS))
async def test_each_format_is_extracted_chunked_and_found_by_meaning(
    kb: KnowledgeBase, filename: str
) -> None:
    collection = unique_collection("fmt")
    result = await kb.ingest_bytes(FORMATS[filename], filename=filename, collection=collection)

    assert result.status == "created"
    doc = result.document
    assert doc.doc_type == filename.rsplit(".", 1)[1]
    assert doc.chunk_count >= 1
    assert len(doc.content_hash) == 64
    hits = await kb.search("where does lava come from?", k=3, collections=[collection])
    assert hits, "the document should be found"
    top = hits[0]
    assert top.document_id == doc.id
    assert top.source == filename
    assert top.doc_type == doc.doc_type
    assert "magma" in top.text
    assert 0 < top.score <= 1


async def test_html_is_indexed_without_tags_scripts_or_styles(kb: KnowledgeBase) -> None:
    collection = unique_collection("html")
    result = await kb.ingest_bytes(HTML_PAGE.encode(), filename="v.html", collection=collection)

    assert result.document.title == "Volcano facts"
    text = " ".join(str((p.payload or {})["chunk"]) for p in await all_points(kb, collection))
    assert "Mount Etna" in text
    assert "Tags & entities go." in text
    for leaked in ("<p>", "secret", "color: red", "a comment"):
        assert leaked not in text


async def test_payload_carries_the_seed_fields_and_deterministic_ids(kb: KnowledgeBase) -> None:
    collection = unique_collection("payload")
    long_text = "\n\n".join(f"Paragraph {i}. {BAKING}" for i in range(8))
    result = await kb.ingest_bytes(long_text.encode(), filename="b.txt", collection=collection)

    doc = result.document
    points = sorted(
        await all_points(kb, collection), key=lambda p: int((p.payload or {})["chunk_index"])
    )
    assert doc.chunk_count == len(points) > 1
    for index, point in enumerate(points):
        payload = point.payload or {}
        assert payload["chunk_index"] == index
        assert payload["document_id"] == str(doc.id)
        assert payload["collection"] == collection
        assert payload["source"] == "b.txt"
        assert payload["doc_type"] == "txt"
        assert "conversation_context" in payload
        assert str(payload["chunk"]).strip()
        assert str(point.id) == point_id(doc.id, doc.content_hash, index)


async def test_same_file_twice_changes_nothing(kb: KnowledgeBase) -> None:
    collection = unique_collection("same")
    first = await kb.ingest_bytes(CHESS.encode(), filename="chess.md", collection=collection)
    before = {str(p.id) for p in await all_points(kb, collection)}

    again = await kb.ingest_bytes(CHESS.encode(), filename="chess.md", collection=collection)

    assert again.status == "unchanged"
    assert again.document.id == first.document.id
    assert again.document.updated_at == first.document.updated_at
    assert {str(p.id) for p in await all_points(kb, collection)} == before
    page = await kb.list_documents(collection=collection)
    assert page.total == 1


async def test_changed_file_replaces_its_old_chunks(kb: KnowledgeBase) -> None:
    collection = unique_collection("change")
    old_text = "\n\n".join(f"Old part {i}. {BAKING}" for i in range(6))
    first = await kb.ingest_bytes(old_text.encode(), filename="doc.txt", collection=collection)
    assert first.document.chunk_count > 1

    second = await kb.ingest_bytes(CHESS.encode(), filename="doc.txt", collection=collection)

    assert second.status == "updated"
    assert second.document.id == first.document.id
    assert second.document.content_hash != first.document.content_hash
    points = await all_points(kb, collection)
    assert len(points) == second.document.chunk_count == 1
    assert all("Sourdough" not in str((p.payload or {})["chunk"]) for p in points)
    hits = await kb.search("sourdough starter", k=5, collections=[collection])
    assert [h.text for h in hits] == [CHESS]


async def test_delete_removes_the_row_and_every_vector(kb: KnowledgeBase) -> None:
    collection = unique_collection("delete")
    keep = await kb.ingest_bytes(CHESS.encode(), filename="keep.txt", collection=collection)
    gone = await kb.ingest_bytes(VOLCANO.encode(), filename="gone.txt", collection=collection)

    await kb.delete_document(gone.document.id)

    with pytest.raises(Exception, match="not found"):
        await kb.get_document(gone.document.id)
    remaining = {(p.payload or {})["document_id"] for p in await all_points(kb, collection)}
    assert remaining == {str(keep.document.id)}
    hits = await kb.search("volcano eruption", k=5, collections=[collection])
    assert {h.document_id for h in hits} == {keep.document.id}


async def test_filters_return_only_matching_payloads(kb: KnowledgeBase) -> None:
    first, second = unique_collection("fa"), unique_collection("fb")
    await kb.ingest_bytes(VOLCANO.encode(), filename="v.txt", collection=first)
    await kb.ingest_bytes(FORMATS["notes.md"], filename="v.md", collection=first)
    await kb.ingest_bytes(BAKING.encode(), filename="bread.md", collection=second)
    query = "volcano lava bread"

    by_type = await kb.search(query, k=10, collections=[first, second], doc_type="md")
    assert by_type
    assert {h.doc_type for h in by_type} == {"md"}
    by_source = await kb.search(query, k=10, collections=[first, second], source="v.txt")
    assert by_source
    assert {h.source for h in by_source} == {"v.txt"}
    only_second = await kb.search(query, k=10, collections=[second])
    assert only_second
    assert {h.collection for h in only_second} == {second}
    both = await kb.search(query, k=10, collections=[first, second])
    assert {h.collection for h in both} == {first, second}
    assert [h.fused for h in both] == sorted((h.fused for h in both), reverse=True)
    none = await kb.search(query, k=10, collections=[second], source="v.txt")
    assert none == []


async def test_unknown_collection_finds_nothing_and_raises_nothing(kb: KnowledgeBase) -> None:
    assert await kb.search("anything", collections=[unique_collection("nope")]) == []


async def test_documents_and_vectors_survive_a_restart(
    database_url: str, tmp_path: Path, embedder: SharedEmbeddings
) -> None:
    collection = unique_collection("restart")
    async with open_kb(database_url, tmp_path / "q") as kb:
        created = await kb.ingest_bytes(CHESS.encode(), filename="c.txt", collection=collection)

    async with open_kb(database_url, tmp_path / "q") as reopened:
        hits = await reopened.search("how does castling work?", k=1, collections=[collection])
        assert [h.document_id for h in hits] == [created.document.id]
        again = await reopened.ingest_bytes(CHESS.encode(), filename="c.txt", collection=collection)
        assert again.status == "unchanged"


async def test_failed_row_write_leaves_no_vectors_and_keeps_the_old_version(
    kb: KnowledgeBase,
) -> None:
    collection = unique_collection("fail")
    old = await kb.ingest_bytes(CHESS.encode(), filename="doc.txt", collection=collection)
    old_points = {str(p.id) for p in await all_points(kb, collection)}

    # NaN is not JSON: PostgreSQL refuses the row after the new vectors were written.
    with pytest.raises(DBAPIError):
        await kb.ingest_bytes(
            VOLCANO.encode(), filename="doc.txt", collection=collection, metadata={"x": math.nan}
        )
    with pytest.raises(DBAPIError):
        await kb.ingest_bytes(
            BAKING.encode(), filename="new.txt", collection=collection, metadata={"x": math.nan}
        )

    assert {str(p.id) for p in await all_points(kb, collection)} == old_points
    row = await kb.get_document(old.document.id)
    assert row.content_hash == old.document.content_hash
    assert (await kb.list_documents(collection=collection)).total == 1


async def test_bad_files_are_refused_before_anything_is_stored(kb: KnowledgeBase) -> None:
    collection = unique_collection("bad")
    with pytest.raises(UnsupportedTypeError, match=r"\.docx"):
        await kb.ingest_bytes(b"PK\x03\x04", filename="report.docx", collection=collection)
    with pytest.raises(UnreadableDocumentError, match="empty"):
        await kb.ingest_bytes(b"  \n", filename="blank.md", collection=collection)
    with pytest.raises(UnreadableDocumentError, match="corrupt PDF"):
        await kb.ingest_bytes(b"%PDF-1.7\nnot really", filename="x.pdf", collection=collection)
    with pytest.raises(UnreadableDocumentError, match="no extractable text"):
        await kb.ingest_bytes(make_pdf([""]), filename="scan.pdf", collection=collection)
    with pytest.raises(DocumentTooLargeError, match="over the limit"):
        await kb.ingest_bytes(b"a" * (kb.max_bytes + 1), filename="big.txt", collection=collection)

    assert (await kb.list_documents(collection=collection)).total == 0
    assert await all_points(kb, collection) == []


_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


async def test_local_mode_calls_keep_their_threads_loop_and_run_in_the_callers_context(
    tmp_path: Path,
) -> None:
    """A worker thread runs local mode's calls on one event loop of its own, kept (not one made
    and closed a call), each in its caller's context."""
    seen: list[tuple[int, asyncio.AbstractEventLoop, str]] = []  # (the loops kept referenced)

    async def probe(client: Any) -> Any:
        seen.append((threading.get_ident(), asyncio.get_running_loop(), _CALLER.get()))
        return await client.get_collections()

    async with open_qdrant(url=None, path=tmp_path / "q") as client:
        for i in range(8):
            _CALLER.set(f"call {i}")
            await qdrant_call(client, probe)
    threads = {thread for thread, _, _ in seen}
    assert len({(thread, id(loop)) for thread, loop, _ in seen}) == len(threads)
    assert [caller for _, _, caller in seen] == [f"call {i}" for i in range(8)]


def test_a_worker_threads_kept_loop_is_shut_down_with_the_thread() -> None:
    """When a worker thread ends, the loop it kept for local mode's calls is shut down as
    `asyncio.run` would: an async generator a call left open is closed (its `finally` runs),
    then the loop."""
    closed: list[str] = []
    left: list[tuple[Any, asyncio.AbstractEventLoop]] = []

    async def ticks() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append("ticks")

    async def call() -> None:
        ticker = ticks()
        await anext(ticker)
        left.append((ticker, asyncio.get_running_loop()))  # open, and kept referenced

    worker = threading.Thread(target=qdrant_module._run_locked, args=(call,))
    worker.start()
    worker.join()
    ((_, loop),) = left
    assert closed == ["ticks"]
    assert loop.is_closed()


async def test_a_light_local_call_runs_on_the_loop_unless_another_call_is_running(
    tmp_path: Path,
) -> None:
    """`get_collections` in local mode: on the caller's thread when the client is free; when
    another call holds it, in a worker thread once that call is done (the loop never waits)."""
    threads: list[int] = []

    async def listing(client: Any) -> Any:
        threads.append(threading.get_ident())
        return await client.get_collections()

    async with open_qdrant(url=None, path=tmp_path / "q") as client:
        await qdrant_call(client, listing, light=True)
        assert threads == [threading.get_ident()]
        with qdrant_module._LOCAL_LOCK:  # another call running
            waiting = asyncio.create_task(qdrant_call(client, listing, light=True))
            await asyncio.sleep(0.05)
            assert not waiting.done()  # (the loop went on meanwhile)
        await waiting
        assert threads[1] != threading.get_ident()


async def test_collection_of_another_dimension_is_refused_at_startup(
    database_url: str, tmp_path: Path, embedder: SharedEmbeddings
) -> None:
    name = unique_collection("dim")
    async with open_qdrant(url=None, path=tmp_path / "q") as client:
        await qdrant_call(
            client,
            lambda c: c.create_collection(
                COLLECTION_PREFIX + name,
                vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE),
            ),
        )
        async with open_database(database_url) as database:
            with pytest.raises(DimensionMismatchError) as raised:
                await open_knowledge(
                    client=client, embedder=embedder, database=database, dimension=384
                )
    message = str(raised.value)
    assert COLLECTION_PREFIX + name in message
    assert "8-d" in message
    assert "384-d" in message


async def test_ingest_path_uses_the_absolute_path_as_source(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    collection = unique_collection("path")
    path = tmp_path / "chess.md"
    path.write_text(f"# Chess\n\n{CHESS}\n", encoding="utf-8")

    result = await kb.ingest_path(path, collection=collection)

    assert result.document.source == path.resolve().as_posix()
    assert result.document.title == "Chess"
    missing = uuid.uuid4()
    with pytest.raises(Exception, match="not found"):
        await kb.delete_document(missing)


async def test_search_never_shows_orphan_or_superseded_vectors(kb: KnowledgeBase) -> None:
    collection = unique_collection("orphans")
    doc = (await kb.ingest_bytes(CHESS.encode(), filename="c.txt", collection=collection)).document
    vector = await kb.embedder.aembed_query(CHESS)
    # What a failed clean-up could leave behind: an old version, and a document with no row.
    leftovers = [
        models.PointStruct(
            id=point_id(doc.id, "0" * 64, 0),
            vector={DENSE: vector, SPARSE: sparse.document_vector(CHESS)},
            payload={"document_id": str(doc.id), "content_hash": "0" * 64, "chunk": "old"},
        ),
        models.PointStruct(
            id=str(uuid.uuid4()),
            vector={DENSE: vector, SPARSE: sparse.document_vector(CHESS)},
            payload={"document_id": str(uuid.uuid4()), "content_hash": "1" * 64, "chunk": "gone"},
        ),
    ]
    await qdrant_call(
        kb.client, lambda c: c.upsert(COLLECTION_PREFIX + collection, points=leftovers)
    )

    hits = await kb.search(CHESS, k=3, collections=[collection])

    assert [(h.document_id, h.text) for h in hits] == [(doc.id, CHESS)]


MANUAL = """# Pump manual

## Valves

The intake valve of the Orvik pump is part Q-9912; it seals with a nitrile ring.

## Motor

The motor draws 2.2 kW and runs on three-phase power; its brushes last 3000 hours.

## Filters

The coarse filter catches leaves and grit; rinse it every week in clean water.
"""


async def test_hits_carry_heading_paths_and_dedup_keeps_the_best_per_document(
    kb: KnowledgeBase,
) -> None:
    collection = unique_collection("dedup")
    manual = await kb.ingest_bytes(MANUAL.encode(), filename="pump.md", collection=collection)
    await kb.ingest_bytes(VOLCANO.encode(), filename="v.txt", collection=collection)
    assert manual.document.chunk_count == 1  # small sections share a chunk under the title
    await kb.ingest_bytes(
        (MANUAL + "\n" + "\n\n".join(f"Extra note {i}. {BAKING}" for i in range(8))).encode(),
        filename="pump.md",
        collection=collection,
    )

    every = await kb.search("pump valve motor filter", k=6, collections=[collection])
    deduped = await kb.search("pump valve motor filter", k=6, collections=[collection], dedup=True)

    assert len({h.document_id for h in every}) < len(every)
    assert [h.source for h in deduped] == ["pump.md", "v.txt"]
    assert deduped[0] == every[0]
    assert deduped[0].heading_path[0] == "Pump manual"


async def test_an_identifier_is_found_by_its_exact_words(kb: KnowledgeBase) -> None:
    collection = unique_collection("ident")
    for code in ("Q-9912", "Z-4471", "K-1187", "M-5530"):
        text = f"# Spare part {code}\n\nA replacement valve seal for garden pumps, part {code}."
        await kb.ingest_bytes(text.encode(), filename=f"{code}.md", collection=collection)

    hits = await kb.search("K-1187", k=4, collections=[collection])

    assert hits[0].source == "K-1187.md"
    assert hits[0].fused > hits[1].fused


async def test_a_new_collection_records_how_it_was_built(kb: KnowledgeBase) -> None:
    collection = unique_collection("build")
    await kb.ingest_bytes(CHESS.encode(), filename="c.txt", collection=collection)
    info = await qdrant_call(kb.client, lambda c: c.get_collection(COLLECTION_PREFIX + collection))
    assert (info.config.metadata or {})["switchboard"] == kb.build
    assert kb.build["chunker"] == "structure-v1"
    assert kb.build["embedder"] == "all-MiniLM-L6-v2"
    assert set(info.config.params.sparse_vectors or {}) == {SPARSE}
    assert set(info.config.params.vectors or {}) == {DENSE, BODY}
    await kb.check_dimensions()
    assert collection not in kb.stale


async def test_each_chunk_has_a_body_vector_from_the_same_pass(kb: KnowledgeBase) -> None:
    collection = unique_collection("body")
    await kb.ingest_bytes(MANUAL.encode(), filename="pump.md", collection=collection)
    name = COLLECTION_PREFIX + collection
    records, _ = await qdrant_call(
        kb.client, lambda c: c.scroll(name, limit=10, with_payload=True, with_vectors=True)
    )
    (point,) = records
    vectors = point.vector
    assert isinstance(vectors, dict)
    chunk = str((point.payload or {})["chunk"])
    titled = f"Pump manual\n{chunk}"
    # The titled vector is the text's; the body's is its chunk read in that context: close to
    # the chunk embedded alone, but not the same.
    (alone,) = await kb.embedder.aembed_documents([chunk])
    (whole,) = await kb.embedder.aembed_documents([titled])
    dense, body = (np.asarray(vectors[name], dtype=np.float64) for name in (DENSE, BODY))
    assert float(np.dot(dense, whole)) > 0.999
    assert 0.9 < float(np.dot(body, alone)) < 0.9999
    assert float(np.dot(body, dense)) < 0.9999


async def test_a_collection_without_body_vectors_is_stale_but_still_fused_and_writable(
    kb: KnowledgeBase,
) -> None:
    collection = unique_collection("layout2")
    name = COLLECTION_PREFIX + collection
    build = {**kb.build, "layout": 2}
    await qdrant_call(
        kb.client,
        lambda c: c.create_collection(
            name,
            vectors_config={DENSE: models.VectorParams(size=384, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata={"switchboard": build},
        ),
    )
    await kb.check_dimensions()
    assert "layout 2 → 3" in kb.stale[collection]
    for code in ("Q-9912", "K-1187"):
        text = f"# Spare part {code}\n\nA replacement valve seal for garden pumps, part {code}."
        await kb.ingest_bytes(text.encode(), filename=f"{code}.md", collection=collection)
    assert all(set(p.vector or {}) <= {DENSE, SPARSE} for p in await _with_vectors(kb, name))
    hits = await kb.search("K-1187", k=2, collections=[collection])
    assert hits[0].source == "K-1187.md"  # the lexical half still takes part

    result = await kb.reindex(collection)

    assert (result.status, result.documents) == ("rebuilt", 2)
    assert collection not in kb.stale
    assert all(set(p.vector or {}) == {DENSE, BODY, SPARSE} for p in await _with_vectors(kb, name))
    assert (await kb.search("K-1187", k=1, collections=[collection]))[0].source == "K-1187.md"


async def _with_vectors(kb: KnowledgeBase, name: str) -> list[models.Record]:
    records, _ = await qdrant_call(
        kb.client, lambda c: c.scroll(name, limit=100, with_payload=True, with_vectors=True)
    )
    result: list[models.Record] = records
    return result


async def _legacy_collection(kb: KnowledgeBase, collection: str) -> Document:
    """A collection as the previous version built it: one unnamed vector, overlapping chunks."""
    data = MANUAL.encode()
    chunks = [MANUAL[:150], MANUAL[120:300], MANUAL[270:]]
    vectors = await kb.embedder.aembed_documents(chunks)
    content_hash = hashlib.sha256(data).hexdigest()
    row = Document(
        id=document_uuid(collection, "pump.md"), collection=collection, source="pump.md",
        doc_type="md", title="Pump manual", content_hash=content_hash, size_bytes=len(data),
        chunk_count=len(chunks), metadata_={},
    )  # fmt: skip
    async with kb.database.sessions.begin() as session:
        session.add(row)
    name = COLLECTION_PREFIX + collection
    await qdrant_call(
        kb.client,
        lambda c: c.create_collection(
            name, vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
        ),
    )
    points = [
        models.PointStruct(
            id=point_id(row.id, content_hash, i),
            vector=vector,
            payload={
                "document_id": str(row.id),
                "content_hash": content_hash,
                "chunk": chunk,
                "chunk_index": i,
                "source": "pump.md",
                "doc_type": "md",
                "collection": collection,
                "title": "Pump manual",
            },
        )
        for i, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True))
    ]
    await qdrant_call(kb.client, lambda c: c.upsert(name, points=points))
    return row


async def test_an_old_collection_is_stale_until_reindexed_and_reindex_is_idempotent(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collection = unique_collection("legacy")
    async with open_kb(database_url, tmp_path / "q") as kb:
        row = await _legacy_collection(kb, collection)
    with caplog.at_level(logging.WARNING, logger="stores.knowledge"):
        async with open_kb(database_url, tmp_path / "q") as kb:
            assert "dense vectors only" in kb.stale[collection]
            assert f"switchboard reindex {collection}" in caplog.text
            old_hits = await kb.search("Orvik intake valve", k=2, collections=[collection])
            assert old_hits[0].document_id == row.id  # searched densely meanwhile
            with pytest.raises(StaleCollectionError, match="reindex"):
                await kb.ingest_bytes(CHESS.encode(), filename="c.txt", collection=collection)

            result = await kb.reindex(collection)

            assert (result.status, result.documents, result.missing) == ("rebuilt", 1, [])
            assert collection not in kb.stale
            points = await all_points(kb, collection)
            assert len(points) == result.chunks == (await kb.get_document(row.id)).chunk_count
            assert {(p.payload or {})["content_hash"] for p in points} == {row.content_hash}
            text = " ".join(str((p.payload or {})["chunk"]) for p in points)
            assert text.count("Q-9912") == 1  # the overlaps were taken out
            hits = await kb.search("Orvik intake valve", k=2, collections=[collection])
            assert hits[0].heading_path[0] == "Pump manual"
            assert (await kb.reindex(collection)).status == "current"
            assert await kb.ingest_bytes(CHESS.encode(), filename="c.txt", collection=collection)
    async with open_kb(database_url, tmp_path / "q") as reopened:
        assert collection not in reopened.stale
        listing = await qdrant_call(reopened.client, lambda c: c.get_collections())
        assert REBUILD_PREFIX + collection not in {c.name for c in listing.collections}


async def test_an_interrupted_reindex_is_finished_by_the_next_one(
    kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = unique_collection("crash")
    row = await _legacy_collection(kb, collection)
    await kb.check_dimensions()
    write = kb._write_points

    async def failing_copy(qdrant_name: str, points: Sequence[models.PointStruct]) -> None:
        if qdrant_name == COLLECTION_PREFIX + collection:
            raise UnavailableError("the vector store went away mid-copy")
        await write(qdrant_name, points)

    monkeypatch.setattr(kb, "_write_points", failing_copy)
    with pytest.raises(UnavailableError):
        await kb.reindex(collection)
    monkeypatch.setattr(kb, "_write_points", write)
    await kb.check_dimensions()
    assert collection in kb.stale  # the copy was cut short: no build record yet

    result = await kb.reindex(collection)

    assert result.status == "rebuilt"
    assert (await kb.get_document(row.id)).chunk_count == result.chunks > 0
    assert len(await all_points(kb, collection)) == result.chunks
    hits = await kb.search("Orvik intake valve", k=1, collections=[collection])
    assert hits[0].document_id == row.id


async def test_the_knowledge_search_tool_passes_dedup_through(kb: KnowledgeBase) -> None:
    collection = unique_collection("tool")
    long_manual = MANUAL + "\n" + "\n\n".join(f"Note {i}: the Orvik pump valve." for i in range(40))
    await kb.ingest_bytes(long_manual.encode(), filename="pump.md", collection=collection)
    await kb.ingest_bytes(VOLCANO.encode(), filename="v.txt", collection=collection)
    env = ToolEnv(context=AgentContext(knowledge=kb, collections=(collection,)), store=None)

    search = KNOWLEDGE_SEARCH.run
    assert search is not None
    every = await search({"query": "Orvik pump valve", "k": 3}, env)
    deduped = await search({"query": "Orvik pump valve", "k": 3, "dedup": True}, env)

    assert every.count("(pump.md,") > 1
    assert deduped.count("(pump.md,") == 1
    assert "(v.txt," in deduped
