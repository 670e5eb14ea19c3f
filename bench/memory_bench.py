"""Memory store latency (put, get, search) at 1k and 10k memories on nx-27017 + local Qdrant."""

from __future__ import annotations

import asyncio
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from langgraph.store.base import PutOp

from stores.embedded_mongo import EmbeddedMongo
from stores.embeddings import MiniLMEmbeddings
from stores.memory import MongoStore, open_memory_store, open_mongo
from stores.qdrant import open_qdrant

SIZES = (1_000, 10_000)
USERS = 100
SAMPLES = {"put": 150, "get": 400, "search_filter": 200, "search_query": 100, "embed_query": 100}
RESULTS = Path(__file__).parent / "results" / "memory.md"
TOPICS = [
    "prefers tea over coffee",
    "is allergic to shellfish",
    "plays tennis on Sundays",
    "works as a data engineer",
    "is planning a trip to Japan",
    "has a dog called Pixel",
    "reads science fiction",
    "is learning the cello",
    "lives near the river",
    "cooks vegetarian food",
]


def memory_text(i: int) -> str:
    """A distinct, plausible memory sentence."""
    return f"Memory {i}: the user {TOPICS[i % len(TOPICS)]} (noted on day {i % 365})."


def namespace_of(i: int) -> tuple[str, str]:
    """Memories spread over `USERS` users, as the agent stores them."""
    return (f"user-{i % USERS}", "memories")


async def fill(store: MongoStore, start: int, stop: int, *, batch: int = 200) -> None:
    """Put memories [start, stop) in batches (one embedding call and one bulk write each)."""
    for first in range(start, stop, batch):
        ops = [
            PutOp(namespace_of(i), f"m{i}", {"text": memory_text(i), "n": i})
            for i in range(first, min(first + batch, stop))
        ]
        await store.abatch(ops)


async def timed(samples: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    """Latencies in ms of `samples` sequential calls."""
    out: list[float] = []
    for n in range(samples):
        started = time.perf_counter()
        await call(n)
        out.append((time.perf_counter() - started) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def measure(
    store: MongoStore, embedder: MiniLMEmbeddings, size: int
) -> dict[str, list[float]]:
    """Latencies of each operation with `size` memories stored."""
    rng = random.Random(size)
    fresh = iter(range(10**7 + size, 10**7 + size + 10_000))
    queries = [f"what does the user think about {t.split()[-1]}?" for t in TOPICS]

    async def put(_: int) -> None:
        i = next(fresh)
        await store.aput(namespace_of(i), f"bench{i}", {"text": memory_text(i), "n": i})

    async def get(_: int) -> None:
        i = rng.randrange(size)
        assert await store.aget(namespace_of(i), f"m{i}") is not None

    async def search_filter(_: int) -> None:
        i = rng.randrange(size)
        await store.asearch(namespace_of(i)[:1], filter={"n": {"$gte": i}}, limit=10)

    async def search_query(n: int) -> None:
        user = (f"user-{rng.randrange(USERS)}",)
        found = await store.asearch(user, query=queries[n % len(queries)], limit=5)
        assert found

    async def embed_query(n: int) -> None:
        await embedder.aembed_query(queries[n % len(queries)] + f" {n}")

    for warm_up in (put, get, search_filter, search_query, embed_query):
        await timed(10, warm_up)  # first calls pay for caches and connections
    return {
        "put": await timed(SAMPLES["put"], put),
        "get": await timed(SAMPLES["get"], get),
        "search_filter": await timed(SAMPLES["search_filter"], search_filter),
        "search_query": await timed(SAMPLES["search_query"], search_query),
        "embed_query": await timed(SAMPLES["embed_query"], embed_query),
    }


async def run(folder: Path) -> tuple[dict[int, dict[str, list[float]]], dict[int, float]]:
    """Fill to each size in turn and measure; returns latencies and fill times per size."""
    embedder = MiniLMEmbeddings()
    embedder.warm_up()
    nx = EmbeddedMongo(folder / "mongo")
    nx.start()
    results: dict[int, dict[str, list[float]]] = {}
    fill_s: dict[int, float] = {}
    try:
        async with (
            open_mongo(nx.uri, "bench") as mongo,
            open_qdrant(url=None, path=folder / "qdrant") as qdrant,
            open_memory_store(
                mongo, qdrant=qdrant, embedder=embedder, dimension=384, sweep_interval_s=None
            ) as (store, _),
        ):
            stored = 0
            for size in SIZES:
                started = time.perf_counter()
                await fill(store, stored, size)
                fill_s[size] = time.perf_counter() - started
                stored = size
                print(f"  filled to {size} memories in {fill_s[size]:.1f} s; measuring")
                results[size] = await measure(store, embedder, size)
    finally:
        nx.stop()
    return results, fill_s


def report(results: dict[int, dict[str, list[float]]], fill_s: dict[int, float]) -> str:
    """The markdown report: p50/p99 per size and the ratio of each to the 1k figure."""
    base = SIZES[0]
    lines = [
        "# Memory store latency",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({platform.python_implementation()} {platform.python_version()}); MongoDB = nx-27017 "
        "(SQLite, spawned on loopback), Qdrant local mode, all-MiniLM-L6-v2 on CPU. "
        f"Memories spread over {USERS} users; each sample is one sequential call. "
        "Ratios compare with the 1k figures of the same run; a user holds 10 memories at 1k "
        "and 100 at 10k. `put` embeds the value and writes MongoDB then Qdrant; `get` is one "
        "read by id; `search_query` embeds the query (see `embed_query` alone), lists the "
        "user's memories in MongoDB, scores their vectors fetched by id and loads the top 5; "
        "`search_filter` is a user-prefix + `$gte` filter search without a query (newest "
        "first). The machine's 2 cores were shared with other work, so single figures are "
        "noisy; `embed_query`, whose cost does not depend on the store, shows how much.",
        "",
        "| operation | samples | "
        + " | ".join(f"p50 @{s // 1000}k ms | p99 @{s // 1000}k ms" for s in SIZES)
        + " | p50 ratio | p99 ratio |",
        "|---|---|" + "---|---|" * len(SIZES) + "---|---|",
    ]
    for op in SAMPLES:
        cells = []
        for size in SIZES:
            values = results[size][op]
            cells.append(f"{pct(values, 50):.2f} | {pct(values, 99):.2f}")
        last = results[SIZES[-1]][op]
        first = results[base][op]
        p50_ratio = pct(last, 50) / pct(first, 50)
        p99_ratio = pct(last, 99) / pct(first, 99)
        lines.append(
            f"| {op} | {len(first)} | "
            + " | ".join(cells)
            + f" | {p50_ratio:.2f}x | {p99_ratio:.2f}x |"
        )
    lines += [
        "",
        "Bulk fill (batches of 200 puts: one embedding call + one bulk write each): "
        + ", ".join(f"to {s} in {fill_s[s]:.1f} s" for s in SIZES)
        + ".",
        "",
        f"Mean search_query at 10k: {statistics.mean(results[SIZES[-1]]['search_query']):.2f} ms.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and write bench/results/memory.md."""
    with tempfile.TemporaryDirectory(prefix="sb-memory-bench-") as folder:
        results, fill_s = asyncio.run(run(Path(folder)))
    text = report(results, fill_s)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
