"""Memory store latency (put, get, search) at 1k and 10k memories on nx-27017 + local Qdrant."""

from __future__ import annotations

import asyncio
import platform
import random
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from langgraph.store.base import PutOp
from qdrant_client import AsyncQdrantClient

from stores.embedded_mongo import EmbeddedMongo
from stores.embeddings import MiniLMEmbeddings
from stores.memory import MongoStore, open_memory_store, open_mongo
from stores.qdrant import open_qdrant

SAMPLES = {"put": 150, "get": 400, "search_filter": 200, "search_query": 100, "embed_query": 100}
MEASURED_USERS = 100
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


@dataclass(frozen=True, slots=True)
class Scenario:
    """A store of `total` memories; the measured users (0-99) hold `per_user` each."""

    label: str
    total: int
    per_user: int


BASELINE = Scenario("1k", 1_000, 10)
SCENARIOS = (
    BASELINE,
    Scenario("10k, 100 users x 100", 10_000, 100),
    Scenario("10k, 1000 users x 10", 10_000, 10),
)


def memory_text(i: int) -> str:
    """A distinct, plausible memory sentence."""
    return f"Memory {i}: the user {TOPICS[i % len(TOPICS)]} (noted on day {i % 365})."


def user_of(i: int, scenario: Scenario) -> str:
    """Memory i's user: the measured users first, the rest spread over other users 10 each."""
    measured = MEASURED_USERS * scenario.per_user
    if i < measured:
        return f"user-{i % MEASURED_USERS}"
    return f"user-{MEASURED_USERS + (i - measured) // 10}"


async def fill(store: MongoStore, scenario: Scenario, start: int, *, batch: int = 200) -> None:
    """Put memories [start, total) in batches (one embedding call and one bulk write each)."""
    for first in range(start, scenario.total, batch):
        ops = [
            PutOp((user_of(i, scenario), "memories"), f"m{i}", {"text": memory_text(i), "n": i})
            for i in range(first, min(first + batch, scenario.total))
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
    store: MongoStore, embedder: MiniLMEmbeddings, scenario: Scenario
) -> dict[str, list[float]]:
    """Latencies of each operation, on the measured users' memories."""
    rng = random.Random(scenario.total + scenario.per_user)
    measured = MEASURED_USERS * scenario.per_user
    fresh = iter(range(10**7, 10**7 + 10_000))
    queries = [f"what does the user think about {t.split()[-1]}?" for t in TOPICS]

    async def put(_: int) -> None:
        i = next(fresh)
        namespace = (f"user-{rng.randrange(MEASURED_USERS)}", "memories")
        await store.aput(namespace, f"bench{i}", {"text": memory_text(i), "n": i})

    async def get(_: int) -> None:
        i = rng.randrange(measured)
        assert await store.aget((user_of(i, scenario), "memories"), f"m{i}") is not None

    async def search_filter(_: int) -> None:
        i = rng.randrange(measured)
        await store.asearch((user_of(i, scenario),), filter={"n": {"$gte": i}}, limit=10)

    async def search_query(n: int) -> None:
        user = (f"user-{rng.randrange(MEASURED_USERS)}",)
        assert await store.asearch(user, query=queries[n % len(queries)], limit=5)

    async def embed_query(n: int) -> None:
        await embedder.aembed_query(queries[n % len(queries)] + f" {n}")

    calls = {
        "put": put,
        "get": get,
        "search_filter": search_filter,
        "search_query": search_query,
        "embed_query": embed_query,
    }
    for call in calls.values():
        await timed(10, call)  # first calls pay for caches and connections
    return {name: await timed(SAMPLES[name], call) for name, call in calls.items()}


@asynccontextmanager
async def bench_store(
    uri: str, qdrant: AsyncQdrantClient, embedder: MiniLMEmbeddings, name: str
) -> AsyncIterator[MongoStore]:
    """A store on database `name` with vector collection `name` (shared client)."""
    async with (
        open_mongo(uri, name) as mongo,
        open_memory_store(
            mongo,
            qdrant=qdrant,
            embedder=embedder,
            dimension=384,
            vector_collection=name,
        ) as (store, _),
    ):
        yield store


async def run(folder: Path) -> tuple[dict[str, dict[str, list[float]]], dict[str, float]]:
    """Fill and measure each scenario; returns latencies and fill times per scenario."""
    embedder = MiniLMEmbeddings()
    embedder.warm_up()
    nx = EmbeddedMongo(folder / "mongo")
    nx.start()
    results: dict[str, dict[str, list[float]]] = {}
    fill_s: dict[str, float] = {}
    try:
        async with open_qdrant(url=None, path=folder / "qdrant") as qdrant:
            for number, scenario in enumerate(SCENARIOS):
                async with bench_store(nx.uri, qdrant, embedder, f"bench_{number}") as store:
                    started = time.perf_counter()
                    await fill(store, scenario, 0)
                    fill_s[scenario.label] = time.perf_counter() - started
                    print(f"  {scenario.label}: filled in {fill_s[scenario.label]:.1f} s")
                    results[scenario.label] = await measure(store, embedder, scenario)
    finally:
        nx.stop()
    return results, fill_s


def report(results: dict[str, dict[str, list[float]]], fill_s: dict[str, float]) -> str:
    """The markdown report: p50/p99 per scenario and each 10k figure's ratio to the 1k one."""
    base = results[BASELINE.label]
    lines = [
        "# Memory store latency",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({platform.python_implementation()} {platform.python_version()}); MongoDB = nx-27017 "
        "(SQLite, spawned on loopback), Qdrant local mode, all-MiniLM-L6-v2 on CPU; "
        "`python -m bench memory`. Each sample is one sequential call on the memories of "
        f"users 0-{MEASURED_USERS - 1}. Three stores: 1k memories (10 per user, the baseline), "
        "10k memories where those users hold 100 each, and 10k memories where they still hold "
        "10 each among 900 other users. Ratios divide each figure by the 1k one of the same run.",
        "",
        "`put` embeds the value, then writes MongoDB and Qdrant; `get` is one read by id; "
        "`search_query` embeds the query (see `embed_query` alone), lists the user's memories "
        "in MongoDB, scores their vectors fetched by id and loads the top 5; `search_filter` "
        "is a user-prefix + `$gte` filter search without a query (newest first). The 2 cores "
        "were shared with other work, so single figures are noisy; `embed_query`, whose cost "
        "does not depend on the store, shows by how much.",
        "",
        "| operation | scenario | p50 ms | p99 ms | p50 vs 1k | p99 vs 1k |",
        "|---|---|---|---|---|---|",
    ]
    for op in SAMPLES:
        for scenario in SCENARIOS:
            values = results[scenario.label][op]
            p50, p99 = pct(values, 50), pct(values, 99)
            lines.append(
                f"| {op} | {scenario.label} | {p50:.2f} | {p99:.2f} | "
                f"{p50 / pct(base[op], 50):.2f}x | {p99 / pct(base[op], 99):.2f}x |"
            )
    lines += [
        "",
        "Bulk fill (batches of 200 puts: one embedding call + one bulk write each): "
        + ", ".join(f"{label} in {seconds:.1f} s" for label, seconds in fill_s.items())
        + ".",
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
