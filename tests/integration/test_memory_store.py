"""MongoStore on a real nx-27017 server and local-mode Qdrant: every BaseStore behaviour."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from qdrant_client import models as qm

from stores.embedded_mongo import EmbeddedMongo
from stores.errors import InvalidInputError, NotFoundError, UnavailableError
from stores.memory import MongoStore, ToolCache
from stores.memory import operations as ops
from stores.memory.store import document_id
from stores.memory.vectors import point_id
from tests.integration.memory_support import FACTS, nx_server, open_test_store


@pytest.fixture(scope="module")
def nx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    with nx_server(tmp_path_factory.mktemp("nx")) as server:
        yield server


@pytest.fixture
async def store_and_cache(
    nx: EmbeddedMongo, tmp_path: Path
) -> AsyncIterator[tuple[MongoStore, ToolCache]]:
    async with open_test_store(nx.uri, tmp_path / "qdrant") as pair:
        yield pair


@pytest.fixture
def store(store_and_cache: tuple[MongoStore, ToolCache]) -> MongoStore:
    return store_and_cache[0]


async def vector_count(store: MongoStore, prefix: tuple[str, ...] = ()) -> int:
    assert store.vectors is not None
    return await store.vectors.count(namespace_prefix=prefix)


async def test_put_get_update_keeps_created_at_and_moves_updated_at(store: MongoStore) -> None:
    await store.aput(("u", "notes"), "k1", {"text": "first", "n": 1})
    first = await store.aget(("u", "notes"), "k1")
    assert first is not None
    assert first.value == {"text": "first", "n": 1}
    assert first.namespace == ("u", "notes")
    assert first.created_at == first.updated_at
    await asyncio.sleep(0.01)
    await store.aput(("u", "notes"), "k1", {"text": "second"})
    second = await store.aget(("u", "notes"), "k1")
    assert second is not None
    assert second.value == {"text": "second"}
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert await store.aget(("u", "notes"), "missing") is None
    assert await store.aget(("u",), "k1") is None


async def test_delete_by_put_none_and_adelete_removes_item_and_vectors(store: MongoStore) -> None:
    await store.aput(("u", "m"), "a", {"text": "alpha"})
    await store.aput(("u", "m"), "b", {"text": "beta"})
    assert await vector_count(store) == 2
    await store.abatch([PutOp(("u", "m"), "a", None)])
    await store.adelete(("u", "m"), "b")
    await store.adelete(("u", "m"), "never-existed")
    assert await store.aget(("u", "m"), "a") is None
    assert await store.aget(("u", "m"), "b") is None
    assert await vector_count(store) == 0
    assert await store.asearch(("u",), query="alpha") == []


async def test_search_filters_match_exact_nested_and_operator_conditions(store: MongoStore) -> None:
    rows = {
        "a": {"color": "red", "n": 1, "meta": {"lang": "en"}, "tags": ["x", "y"]},
        "b": {"color": "blue", "n": 3, "meta": {"lang": "pt"}, "tags": ["x"]},
        "c": {"color": "red", "n": 5, "meta": {"lang": "pt"}, "tags": ["y", "x"]},
        "d": {"color": "green", "n": 7.5, "name": "delta"},
    }
    for key, value in rows.items():
        await store.aput(("f",), key, value, index=False)

    async def keys(filter: dict[str, object]) -> list[str]:
        return sorted(i.key for i in await store.asearch(("f",), filter=filter, limit=50))

    assert await keys({"color": "red"}) == ["a", "c"]
    assert await keys({"color": "red", "n": 5}) == ["c"]
    assert await keys({"n": {"$gt": 3}}) == ["c", "d"]
    assert await keys({"n": {"$gte": 3, "$lt": 7}}) == ["b", "c"]
    assert await keys({"n": {"$lte": 1}}) == ["a"]
    assert await keys({"color": {"$ne": "red"}}) == ["b", "d"]
    assert await keys({"color": {"$eq": "blue"}}) == ["b"]
    assert await keys({"meta": {"lang": "pt"}}) == ["b", "c"]
    assert await keys({"tags": ["x", "y"]}) == ["a"]
    assert await keys({"tags": "x"}) == []
    assert await keys({"name": {"$gt": "c"}}) == ["d"]
    assert await keys({"missing": "value"}) == []
    # Names with quotes and other characters are matched too (schemathesis found that a
    # quote in a name pushed down to nx-27017 was an SQL syntax error there, a 500).
    await store.aput(("f",), "q", {"it's": 1, 'ä b"c': "x"}, index=False)
    assert await keys({"it's": 1}) == ["q"]
    assert await keys({"it's": {"$gte": 1}, 'ä b"c': "x"}) == ["q"]
    with pytest.raises(ValueError, match=r"\$regex"):
        await store.asearch(("f",), filter={"color": {"$regex": "r.*"}})


async def test_search_pages_newest_first_with_limit_and_offset(store: MongoStore) -> None:
    for i in range(7):
        await store.aput(("p", "items"), f"k{i}", {"i": i, "even": i % 2 == 0}, index=False)
    page1 = await store.asearch(("p",), limit=3)
    page2 = await store.asearch(("p",), limit=3, offset=3)
    page3 = await store.asearch(("p",), limit=3, offset=6)
    assert [i.key for i in page1] == ["k6", "k5", "k4"]
    assert [i.key for i in page2] == ["k3", "k2", "k1"]
    assert [i.key for i in page3] == ["k0"]
    assert all(i.score is None for i in page1)
    evens = await store.asearch(("p",), filter={"even": True}, limit=2, offset=1)
    assert [i.key for i in evens] == ["k4", "k2"]


async def test_namespace_prefix_matches_whole_labels_only(store: MongoStore) -> None:
    await store.aput(("a", "b"), "k", {"v": 1}, index=False)
    await store.aput(("a", "b", "c"), "k", {"v": 2}, index=False)
    await store.aput(("a", "bc"), "k", {"v": 3}, index=False)
    await store.aput(("ab",), "k", {"v": 4}, index=False)
    found = {i.namespace for i in await store.asearch(("a", "b"), limit=10)}
    assert found == {("a", "b"), ("a", "b", "c")}
    assert {i.namespace for i in await store.asearch(("a",), limit=10)} == {
        ("a", "b"),
        ("a", "b", "c"),
        ("a", "bc"),
    }
    assert len(await store.asearch((), limit=10)) == 4


async def test_list_namespaces_prefix_suffix_wildcards_depth_and_paging(store: MongoStore) -> None:
    for namespace in [
        ("users", "1", "memories"),
        ("users", "2", "memories"),
        ("users", "2", "profile"),
        ("docs", "v1"),
        ("docs", "draft", "v1"),
        ("cache",),
    ]:
        await store.aput(namespace, "k", {"x": 1}, index=False)
    assert await store.alist_namespaces() == [
        ("cache",),
        ("docs", "draft", "v1"),
        ("docs", "v1"),
        ("users", "1", "memories"),
        ("users", "2", "memories"),
        ("users", "2", "profile"),
    ]
    assert await store.alist_namespaces(prefix=("users",)) == [
        ("users", "1", "memories"),
        ("users", "2", "memories"),
        ("users", "2", "profile"),
    ]
    assert await store.alist_namespaces(suffix=("memories",)) == [
        ("users", "1", "memories"),
        ("users", "2", "memories"),
    ]
    assert await store.alist_namespaces(prefix=("users", "*", "profile")) == [
        ("users", "2", "profile")
    ]
    assert await store.alist_namespaces(suffix=("*", "v1")) == [
        ("docs", "draft", "v1"),
        ("docs", "v1"),
    ]
    assert await store.alist_namespaces(prefix=("docs",), suffix=("v1",), max_depth=1) == [
        ("docs",)
    ]
    assert await store.alist_namespaces(max_depth=2) == [
        ("cache",),
        ("docs", "draft"),
        ("docs", "v1"),
        ("users", "1"),
        ("users", "2"),
    ]
    assert await store.alist_namespaces(max_depth=2, limit=2, offset=1) == [
        ("docs", "draft"),
        ("docs", "v1"),
    ]
    result = await store.abatch(
        [
            ListNamespacesOp(
                match_conditions=(MatchCondition("prefix", ("users",)),), max_depth=2, limit=1
            )
        ]
    )
    assert result == [[("users", "1")]]


async def test_expired_items_are_invisible_then_swept_with_their_vectors(store: MongoStore) -> None:
    await store.aput(("t",), "long", {"text": "lasting"}, ttl=10)
    await store.aput(("t",), "forever", {"text": "permanent"})
    await store.aput(("t",), "short", {"text": "fleeting"}, ttl=1.0 / 60)  # one second
    await store.aput(("gone",), "only", {"v": 0}, ttl=1.0 / 60, index=False)
    assert await store.aget(("t",), "short", refresh_ttl=False) is not None
    await asyncio.sleep(1.3)
    assert await store.aget(("t",), "short") is None
    assert sorted(i.key for i in await store.asearch(("t",))) == ["forever", "long"]
    assert [k.key for k in await store.asearch(("t",), query="fleeting")] != ["short"]
    assert await store.alist_namespaces() == [("t",)]  # ("gone",) held only an expired item
    assert await vector_count(store) == 3
    assert await store.asweep_ttl() == 2
    assert await vector_count(store) == 2
    assert await store.asweep_ttl() == 0


async def test_reads_refresh_ttl_unless_asked_not_to(store: MongoStore) -> None:
    ttl = 2.0 / 60  # two seconds
    await store.aput(("r",), "kept", {"v": 1}, ttl=ttl, index=False)
    await store.aput(("r",), "left", {"v": 2}, ttl=ttl, index=False)
    await asyncio.sleep(1.0)
    assert await store.aget(("r",), "kept") is not None  # expiry moves to now + 2 s
    assert await store.aget(("r",), "left", refresh_ttl=False) is not None
    await asyncio.sleep(1.3)
    assert await store.aget(("r",), "left") is None
    found = await store.asearch(("r",))  # a search refreshes too
    assert [i.key for i in found] == ["kept"]
    await asyncio.sleep(1.3)
    assert await store.aget(("r",), "kept") is not None


async def test_semantic_search_ranks_the_peanut_allergy_first(store: MongoStore) -> None:
    namespace = ("user-1", "memories")
    for i, fact in enumerate(FACTS[1:] + FACTS[:1]):  # the allergy goes in last
        await store.aput(namespace, f"m{i}", {"text": fact})
    results = await store.asearch(("user-1",), query="what food should I avoid?", limit=3)
    assert results[0].value["text"] == "I'm allergic to peanuts"
    assert results[0].score is not None
    assert [r.score for r in results] == sorted((r.score or 0.0 for r in results), reverse=True)
    second_page = await store.asearch(("user-1",), query="what food should I avoid?", offset=1)
    assert [r.key for r in second_page[:2]] == [r.key for r in results[1:3]]


async def test_large_scopes_use_qdrant_search_with_the_same_ranking(store: MongoStore) -> None:
    for i, fact in enumerate(FACTS):
        await store.aput(("big", "memories"), f"m{i}", {"text": fact, "i": i})
    await store.aput(("other",), "x", {"text": "I'm allergic to peanuts"})
    query = "what food should I avoid?"
    exact = await store.asearch(("big",), query=query, limit=4, offset=1)
    exact_filtered = await store.asearch(("big",), query=query, filter={"i": {"$gte": 5}})
    store.exact_scan_limit = 2  # every scope here is bigger: Qdrant's filtered search runs
    nearest = await store.asearch(("big",), query=query, limit=4, offset=1)
    nearest_filtered = await store.asearch(("big",), query=query, filter={"i": {"$gte": 5}})
    assert [r.key for r in nearest] == [r.key for r in exact]
    assert [round(r.score or 0, 4) for r in nearest] == [round(r.score or 0, 4) for r in exact]
    assert [r.key for r in nearest_filtered] == [r.key for r in exact_filtered]
    assert {r.namespace for r in await store.asearch(("big",), query=query, limit=20)} == {
        ("big", "memories")
    }


async def test_semantic_search_applies_filters_and_index_settings(store: MongoStore) -> None:
    await store.aput(("s",), "peanuts", {"text": "I'm allergic to peanuts", "kind": "health"})
    await store.aput(("s",), "shellfish", {"text": "Shellfish makes me ill", "kind": "diet"})
    await store.aput(("s",), "hidden", {"text": "I must never eat peanuts"}, index=False)
    await store.aput(
        ("s",),
        "titled",
        {"title": "I cannot eat gluten", "text": "unrelated words"},
        index=["title"],
    )
    only_diet = await store.asearch(("s",), query="food allergy", filter={"kind": "diet"})
    assert [r.key for r in only_diet] == ["shellfish"]
    ranked = await store.asearch(("s",), query="food I cannot eat", limit=10)
    assert "hidden" not in [r.key for r in ranked]
    assert set(r.key for r in ranked) == {"peanuts", "shellfish", "titled"}
    assert (await store.aget(("s",), "hidden")) is not None
    assert store.vectors is not None
    doc = document_id(("s",), "titled")
    points = await store.vectors.client.retrieve(
        store.vectors.collection, [point_id(doc, "title"), point_id(doc, "$")]
    )
    assert [str(p.id) for p in points] == [point_id(doc, "title")]


async def test_text_fields_are_embedded_and_other_values_whole(store: MongoStore) -> None:
    await store.aput(("e",), "text", {"text": "I hate mushrooms", "origin": "chat"})
    await store.aput(("e",), "content", {"content": "Dinner at eight", "text": "Call mum"})
    await store.aput(("e",), "plain", {"note": "I hate olives"})
    assert store.vectors is not None
    expected = {"text": ["text"], "content": ["text", "content"], "plain": ["$"]}
    for key, paths in expected.items():
        doc = document_id(("e",), key)
        ids = [point_id(doc, path) for path in ("$", "text", "content")]
        points = await store.vectors.client.retrieve(store.vectors.collection, ids)
        assert sorted(str(p.id) for p in points) == sorted(point_id(doc, p) for p in paths)
    found = await store.asearch(("e",), query="olives", limit=1)
    assert [r.key for r in found] == ["plain"]


async def test_reput_with_fewer_fields_drops_stale_vectors(store: MongoStore) -> None:
    await store.aput(("v",), "k", {"tags": ["a", "b", "c"]}, index=["tags[*]"])
    assert await vector_count(store) == 3
    await store.aput(("v",), "k", {"tags": ["a"]}, index=["tags[*]"])
    assert await vector_count(store) == 1
    await store.aput(("v",), "k", {"tags": ["a"]}, index=False)
    assert await vector_count(store) == 0


async def test_reindex_rebuilds_vectors_with_identical_results(store: MongoStore) -> None:
    for i, fact in enumerate(FACTS):
        await store.aput(("u", "memories"), f"m{i}", {"text": fact})
    await store.aput(("u", "memories"), "unindexed", {"text": "peanut butter"}, index=False)
    query = "what food should I avoid?"
    before = [(r.key, round(r.score or 0, 5)) for r in await store.asearch(("u",), query=query)]
    assert store.vectors is not None
    await store.vectors.recreate()  # lose every vector
    assert await store.asearch(("u",), query=query) == []
    assert await store.areindex() == len(FACTS)
    after = [(r.key, round(r.score or 0, 5)) for r in await store.asearch(("u",), query=query)]
    assert after == before
    assert await vector_count(store) == len(FACTS)


async def test_vectors_of_another_size_ask_for_a_reindex_which_fixes_them(
    nx: EmbeddedMongo, tmp_path: Path
) -> None:
    database = f"dim_{uuid.uuid4().hex[:8]}"
    async with open_test_store(nx.uri, tmp_path / "qdrant", database=database) as (store, _):
        await store.aput(("d",), "k", {"text": "I'm allergic to peanuts"})
        vectors = store.vectors
        assert vectors is not None
        await vectors.client.delete_collection(vectors.collection)
        await vectors.client.create_collection(
            vectors.collection, vectors_config=qm.VectorParams(size=8, distance=qm.Distance.COSINE)
        )
    async with open_test_store(nx.uri, tmp_path / "qdrant", database=database) as (reopened, _):
        with pytest.raises(UnavailableError, match=r"have 8 dimensions.*memory reindex"):
            await reopened.asearch(("d",), query="food")
        assert await reopened.areindex() == 1
        assert [r.key for r in await reopened.asearch(("d",), query="food")] == ["k"]


async def test_one_users_memories_never_come_back_for_another(store: MongoStore) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await ops.remember_for_user(store, alice, "allergy", {"text": "I'm allergic to peanuts"})
    await ops.remember_for_user(store, alice, "city", {"text": "I live in Lisbon"})
    await ops.remember_for_user(store, bob, "pet", {"text": "I have a dog"})
    bob_page = await ops.list_user_memories(store, bob, query="what food should I avoid?")
    assert [i.key for i in bob_page.items] == ["pet"]
    assert bob_page.total == 1
    bob_all = await ops.list_user_memories(store, bob)
    assert [i.namespace for i in bob_all.items] == [(str(bob), "memories")]
    alice_page = await ops.list_user_memories(store, alice, query="peanuts")
    assert alice_page.items[0].key == "allergy"
    assert await ops.forget_user(store, bob) == 1
    assert (await ops.list_user_memories(store, alice)).total == 2
    assert await vector_count(store, (str(bob),)) == 0
    assert await vector_count(store, (str(alice),)) == 2


async def test_forgetting_one_memory_and_everything(store: MongoStore) -> None:
    user = uuid.uuid4()
    await ops.remember_for_user(store, user, "a", {"text": "one"})
    await ops.remember_for_user(store, user, "b", {"text": "two"})
    await store.aput(ops.user_memory_namespace(user, "work"), "a", {"text": "three"})
    assert await ops.forget_user_memory(store, user, "a") == 2
    with pytest.raises(NotFoundError):
        await ops.forget_user_memory(store, user, "a")
    assert await ops.forget_user(store, user) == 1
    assert (await ops.list_user_memories(store, user)).total == 0
    assert await vector_count(store, (str(user),)) == 0


async def test_concurrent_puts_and_searches_all_land(store: MongoStore) -> None:
    async def writer(i: int) -> None:
        await store.aput((f"c{i % 5}", "memories"), f"k{i}", {"text": FACTS[i % len(FACTS)]})

    async def reader(i: int) -> int:
        return len(await store.asearch((f"c{i % 5}",), query="food", limit=50))

    await asyncio.gather(*(writer(i) for i in range(40)), *(reader(i) for i in range(20)))
    counts = await asyncio.gather(*(reader(i) for i in range(5)))
    assert counts == [8, 8, 8, 8, 8]
    assert await store.acount() == 40
    assert await vector_count(store) == 40


async def test_batch_runs_reads_before_puts_and_returns_results_in_order(store: MongoStore) -> None:
    await store.aput(("b",), "old", {"v": 0}, index=False)
    results = await store.abatch(
        [
            PutOp(("b",), "new", {"v": 1}, index=False),
            GetOp(("b",), "old"),
            GetOp(("b",), "new"),
            SearchOp(("b",)),
            ListNamespacesOp(),
            PutOp(("b",), "new", {"v": 2}, index=False),
        ]
    )
    assert results[0] is None
    first = results[1]
    assert isinstance(first, Item)
    assert first.value == {"v": 0}
    assert results[2] is None
    searched = results[3]
    assert isinstance(searched, list)
    assert [i.key for i in searched if isinstance(i, Item)] == ["old"]
    assert results[4] == [("b",)]
    item = await store.aget(("b",), "new")
    assert item is not None
    assert item.value == {"v": 2}


async def test_sync_methods_work_from_threads_and_refuse_the_loop(store: MongoStore) -> None:
    def in_thread() -> tuple[object, list[str]]:
        store.put(("sync",), "k", {"text": "from a thread"})
        item = store.get(("sync",), "k")
        found = [i.key for i in store.search(("sync",), query="thread")]
        return (item.value if item else None), found

    value, found = await asyncio.to_thread(in_thread)
    assert value == {"text": "from a thread"}
    assert found == ["k"]
    with pytest.raises(asyncio.InvalidStateError):
        store.get(("sync",), "k")


async def test_malformed_namespaces_keys_and_values_are_rejected(store: MongoStore) -> None:
    with pytest.raises(InvalidNamespaceError):
        await store.aput(("a.b",), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        await store.aput((), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        await store.abatch([PutOp(("ok", ""), "k", {"v": 1})])
    with pytest.raises(InvalidNamespaceError):
        await store.abatch([PutOp(("langgraph",), "k", {"v": 1})])
    with pytest.raises(InvalidNamespaceError):
        await store.abatch([SearchOp(("x.y",))])
    with pytest.raises(InvalidInputError) as bad_label:
        await ops.put_item(store, ["ok", 3], "k", {"v": 1})
    assert bad_label.value.field == "namespace"
    with pytest.raises(InvalidInputError) as bad_key:
        await ops.put_item(store, ["ok"], "", {"v": 1})
    assert bad_key.value.field == "key"
    with pytest.raises(InvalidInputError) as bad_value:
        await ops.put_item(store, ["ok"], "k", ["not", "an", "object"])
    assert bad_value.value.field == "value"
    with pytest.raises(InvalidInputError) as bad_filter:
        await ops.search_items(store, ["ok"], filter={"v": {"$where": "1"}})
    assert bad_filter.value.field == "filter"
    assert await store.alist_namespaces() == []


async def test_store_api_operations_round_trip(store: MongoStore) -> None:
    await ops.put_item(store, ["assistant", "prefs"], "theme", {"text": "dark mode"}, ttl=5)
    item = await ops.get_item(store, ["assistant", "prefs"], "theme")
    assert item.value == {"text": "dark mode"}
    found = await ops.search_items(store, ["assistant"], query="colour scheme", limit=5)
    assert [i.key for i in found] == ["theme"]
    assert await ops.list_namespaces(store, prefix=["assistant"]) == [("assistant", "prefs")]
    assert await ops.list_namespaces(store, suffix=["prefs"], max_depth=1) == [("assistant",)]
    await ops.delete_item(store, ["assistant", "prefs"], "theme")
    with pytest.raises(NotFoundError):
        await ops.get_item(store, ["assistant", "prefs"], "theme")


async def test_tool_cache_hits_until_expiry_and_invalidation(
    store_and_cache: tuple[MongoStore, ToolCache],
) -> None:
    _, cache = store_and_cache
    await cache.put("weather", {"city": "Lisbon", "units": "C"}, {"temp": 21}, ttl_seconds=0.5)
    await cache.put("weather", {"city": "Porto"}, [1, "two", None], ttl_seconds=60)
    assert await cache.get("weather", {"units": "C", "city": "Lisbon"}) == {"temp": 21}
    assert await cache.get("weather", {"city": "Porto"}) == [1, "two", None]
    assert await cache.get("weather", {"city": "Faro"}) is None
    await asyncio.sleep(0.7)
    assert await cache.get("weather", {"city": "Lisbon", "units": "C"}) is None
    assert await cache.sweep() == 1
    assert await cache.invalidate("weather") == 1
    assert await cache.get("weather", {"city": "Porto"}) is None
