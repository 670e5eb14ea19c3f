"""MongoDB going away mid-test: 503 with a clear message, the server keeps serving, recovers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stores.embedded_mongo import EmbeddedMongo
from stores.errors import UnavailableError
from tests.integration.memory_support import nx_server, open_test_store
from tests.support import make_settings, running_server


@pytest.fixture(scope="module")
def nx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    with nx_server(tmp_path_factory.mktemp("nx")) as server:
        yield server


@pytest.fixture(scope="module")
def outage_api(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, nx: EmbeddedMongo
) -> Iterator[httpx.Client]:
    settings = make_settings(
        database_url,
        tmp_path_factory.mktemp("outage-data"),
        migrate_on_start=False,
        mongodb_uri=nx.uri,
        mongodb_timeout_ms=500,
        mongodb_write_retries=1,
    )
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture
def restart_after(nx: EmbeddedMongo) -> Iterator[EmbeddedMongo]:
    try:
        yield nx
    finally:
        nx.start()


def test_mongodb_killed_mid_test_gives_503_and_the_server_recovers(
    outage_api: httpx.Client, restart_after: EmbeddedMongo
) -> None:
    api = outage_api
    user = api.post("/users", json={"email": "outage@example.com", "name": "Out"}).json()["id"]
    kept = api.put(f"/users/{user}/memories/kept", json={"value": {"text": "I like tea"}})
    assert kept.status_code == 200, kept.text
    assert api.get("/healthz").json()["dependencies"]["mongodb"]["kind"] == "external"

    restart_after.kill()
    listing = api.get(f"/users/{user}/memories")
    assert listing.status_code == 503
    assert "MongoDB" in listing.json()["detail"]
    write = api.put(f"/users/{user}/memories/lost", json={"value": {"text": "coffee"}})
    assert write.status_code == 503
    assert "MongoDB (memory store) is unavailable" in write.json()["detail"]
    assert api.delete(f"/users/{user}/memories").status_code == 503
    health = api.get("/healthz")
    assert health.status_code == 503
    assert health.json()["dependencies"]["mongodb"]["status"] == "down"
    assert health.json()["dependencies"]["postgres"]["status"] == "ok"
    assert api.get(f"/users/{user}").status_code == 200  # the rest of the server still works

    restart_after.start()
    assert api.get("/healthz").json()["dependencies"]["mongodb"]["status"] == "ok"
    after = api.get(f"/users/{user}/memories").json()
    assert [m["key"] for m in after["items"]] == ["kept"]  # the failed write was reported, not kept
    again = api.put(f"/users/{user}/memories/lost", json={"value": {"text": "coffee"}})
    assert again.status_code == 200


async def test_store_writes_raise_unavailable_while_down_and_work_after_restart(
    restart_after: EmbeddedMongo, tmp_path: Path
) -> None:
    async with open_test_store(
        restart_after.uri, tmp_path / "qdrant", semantic=False, timeout_ms=400, write_retries=1
    ) as (store, cache):
        namespace = (str(uuid.uuid4()), "memories")
        await store.aput(namespace, "before", {"v": 1})
        restart_after.kill()
        with pytest.raises(UnavailableError, match="could not write 1 memories after 2 attempts"):
            await store.aput(namespace, "during", {"v": 2})
        with pytest.raises(UnavailableError):
            await store.aget(namespace, "before")
        with pytest.raises(UnavailableError):
            await cache.put("tool", {"a": 1}, "result", ttl_seconds=60)
        restart_after.start()
        item = await store.aget(namespace, "before")
        assert item is not None
        assert item.value == {"v": 1}
        assert await store.aget(namespace, "during") is None
        await store.aput(namespace, "during", {"v": 2})
        assert [i.key for i in await store.asearch(namespace)] == ["during", "before"]
