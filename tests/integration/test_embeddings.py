"""The embedding path on the real model: ONNX export, shared forward passes, cache, one per turn."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from graphs.chat import build_chat_graph
from nodes.context import AgentContext
from stores.embedded_mongo import EmbeddedMongo
from stores.embeddings import MiniLMEmbeddings, SharedEmbeddings, export_onnx
from stores.knowledge import KnowledgeBase
from stores.memory import MongoStore
from tests.integration.knowledge_support import open_kb, shared_embedder, unique_collection
from tests.integration.memory_support import nx_server, open_test_store

SENTENCES = [
    "The kettle switches itself off when the water boils.",
    "Castling moves the king two squares towards a rook.",
    "How do I rotate the signing keys of a service account?",
    "Tides rise and fall twice a day because of the Moon.",
]


@pytest.fixture(scope="module")
def shared() -> SharedEmbeddings:
    """The process's shared ONNX model (int8), loaded once."""
    return shared_embedder()


@pytest.fixture(scope="module")
def torch_model() -> MiniLMEmbeddings:
    """The reference: sentence-transformers on torch."""
    model = MiniLMEmbeddings(backend="torch")
    model.warm_up()
    return model


def _cosines(a: list[list[float]], b: list[list[float]]) -> np.ndarray:
    products: np.ndarray = (np.asarray(a) * np.asarray(b)).sum(axis=1)
    return products


def test_onnx_export_matches_torch_and_int8_stays_close(
    shared: SharedEmbeddings, torch_model: MiniLMEmbeddings
) -> None:
    reference = torch_model.embed_documents(SENTENCES)
    fp32 = MiniLMEmbeddings(quantize=False)
    assert fp32.backend_used is None
    vectors = fp32.embed_documents(SENTENCES)
    assert fp32.backend_used == "onnx"
    assert _cosines(vectors, reference).min() > 0.9999
    int8 = shared.embed_documents(SENTENCES)
    assert isinstance(shared.inner, MiniLMEmbeddings)
    assert shared.inner.backend_used == "onnx-int8"
    assert _cosines(int8, reference).min() > 0.95
    assert np.allclose(np.linalg.norm(np.asarray(int8), axis=1), 1.0, atol=1e-4)


def test_a_span_is_pooled_from_the_same_pass_as_its_text(
    shared: SharedEmbeddings, torch_model: MiniLMEmbeddings
) -> None:
    title = "Brewmaster K2 kettle > Warranty"
    texts = [f"{title}\n{s}" for s in SENTENCES]
    starts = [len(title) + 1] * len(texts)
    fp32 = MiniLMEmbeddings(quantize=False)
    whole, tails = fp32.embed_spans(texts, starts)
    torch_whole, torch_tails = torch_model.embed_spans(texts, starts)
    assert _cosines(whole, torch_whole).min() > 0.9999
    assert _cosines(tails, torch_tails).min() > 0.9999
    assert _cosines(whole, fp32.embed_documents(texts)).min() > 0.9999
    # The tail is read in context: near the sentence alone, nearer than the titled text is.
    alone = fp32.embed_documents(SENTENCES)
    assert (_cosines(tails, alone) > _cosines(whole, alone)).all()
    assert _cosines(tails, alone).min() > 0.75
    # From character 0 the span is every word of the text ([CLS] and [SEP] left out).
    same, from_start = fp32.embed_spans(texts, [0] * len(texts))
    assert 0.99 < _cosines(same, from_start).min() < 0.9999
    # int8 through the shared worker: one call of the model gives both.
    before = shared.forward_passes
    int8_whole, int8_tails = asyncio.run(shared.aembed_spans(texts, starts))
    assert shared.forward_passes == before + 1
    assert _cosines(int8_tails, tails).min() > 0.95
    assert _cosines(int8_whole, whole).min() > 0.95


def test_two_exports_at_once_make_one_model(tmp_path: Path) -> None:
    model_path = MiniLMEmbeddings().path
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(export_onnx(model_path, tmp_path, quantize=False))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[0] == results[1]
    assert results[0].is_file()
    assert [p.name for p in results[0].parent.iterdir() if p.suffix == ".partial"] == []


def test_an_impossible_export_falls_back_to_torch_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, torch_model: MiniLMEmbeddings
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the export folder should be")
    model = MiniLMEmbeddings(cache_dir=blocker)
    with caplog.at_level(logging.WARNING, logger="stores.embeddings"):
        vectors = model.embed_documents(SENTENCES[:1])
    assert model.backend_used == "torch"
    assert "ONNX backend unavailable, using torch" in caplog.text
    assert _cosines(vectors, torch_model.embed_documents(SENTENCES[:1]))[0] > 0.9999


async def test_concurrent_queries_share_one_forward_pass(shared: SharedEmbeddings) -> None:
    alone = {text: await shared.aembed_query(text) for text in SENTENCES}
    texts = [f"question {i} about {uuid.uuid4().hex}" for i in range(8)]
    passes = shared.forward_passes
    # The worker is inside a document batch while the queries arrive: they wait together and
    # go ahead of the batches still queued. Waiting for the first batch to start (rather than
    # yielding once) keeps a loaded machine's late thread wake-up from letting one query in
    # alone before the others are queued.
    document_texts = SENTENCES * 64
    batches = -(-len(document_texts) // shared.document_batch)
    assert batches > 1
    documents = asyncio.ensure_future(shared.aembed_documents(document_texts))
    deadline = time.monotonic() + 120
    while shared.forward_passes == passes:
        assert time.monotonic() < deadline, "the worker never started the document batch"
        await asyncio.sleep(0.001)
    vectors = await asyncio.gather(*(shared.aembed_query(t) for t in texts))
    await documents
    assert shared.forward_passes - passes == batches + 1  # the batches, one for all 8 queries
    again = [shared.inner.embed_query(t) for t in texts]
    assert vectors == again  # int8 encodes each text alone: the same vector in any company
    assert shared.cached(SENTENCES[0])
    passes = shared.forward_passes
    assert await shared.aembed_query(SENTENCES[0]) == alone[SENTENCES[0]]
    assert shared.forward_passes == passes


async def test_a_cancelled_caller_does_not_cancel_the_others(shared: SharedEmbeddings) -> None:
    text = f"shared question {uuid.uuid4().hex}"
    blocker = asyncio.ensure_future(shared.aembed_documents(SENTENCES * 8))
    await asyncio.sleep(0)
    first = asyncio.ensure_future(shared.aembed_query(text))
    second = asyncio.ensure_future(shared.aembed_query(text))
    await asyncio.sleep(0)
    first.cancel()
    vector = await second
    await blocker
    assert len(vector) == 384
    assert first.cancelled()
    assert shared.cached(text)


@pytest.fixture(scope="module")
def nx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    """A real nx-27017 server for this module."""
    with nx_server(tmp_path_factory.mktemp("nx")) as server:
        yield server


@pytest.fixture
async def stores(
    database_url: str, tmp_path: Path, nx: EmbeddedMongo
) -> AsyncIterator[tuple[KnowledgeBase, MongoStore]]:
    """A knowledge base and a memory store sharing the process's embedder, as the server does."""
    async with (
        open_kb(database_url, tmp_path / "kb") as kb,
        open_test_store(nx.uri, tmp_path / "memory") as (store, _),
    ):
        yield kb, store


async def test_one_turn_embeds_its_question_once_for_recall_and_retrieve(
    stores: tuple[KnowledgeBase, MongoStore], shared: SharedEmbeddings
) -> None:
    kb, store = stores
    collection = unique_collection("turn")
    await kb.ingest_bytes(
        b"# Kettles\n\nDescale the kettle monthly with citric acid.", filename="k.md",
        collection=collection,
    )  # fmt: skip
    user = f"user-{uuid.uuid4().hex[:8]}"
    memory = {"text": "I descale my kettle every two weeks because our water is very hard"}
    await store.aput((user, "memories"), "m1", memory)
    question = f"How often should I descale my kettle? ({uuid.uuid4().hex[:6]})"
    ctx = AgentContext(user_id=user, knowledge=kb, collections=(collection,), tools=())
    graph = build_chat_graph(checkpointer=InMemorySaver(), store=store)
    requests, computed = shared.query_requests, shared.queries_encoded

    events = {
        chunk["event"]: chunk["data"]
        async for chunk in graph.astream(
            {"messages": [HumanMessage(question)]},
            {"configurable": {"thread_id": uuid.uuid4().hex}},
            context=ctx,
            stream_mode="custom",
        )
    }

    assert events["memories"]["memories"], "recall searched the memories by the question"
    assert events["sources"]["sources"], "retrieve searched the knowledge base by the question"
    assert shared.query_requests - requests >= 2
    assert shared.queries_encoded - computed == 1
