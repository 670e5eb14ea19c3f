"""Paging is bounded where it enters: an offset past MAX_OFFSET is a 422 naming `offset` on every
search of the Agent Server API (it used to reach PostgreSQL and come back as a 503)."""

from __future__ import annotations

import httpx

from stores.memory.operations import MAX_OFFSET

HUGE = 10**19  # past PostgreSQL's bigint


def _names_offset(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == "offset"
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_an_offset_past_the_bound_is_422_naming_it_and_the_bound_itself_is_served(
    api: httpx.Client,
) -> None:
    thread_id = api.post("/threads", json={}).json()["thread_id"]
    assistant_id = api.post("/assistants/search", json={"limit": 1}).json()[0]["assistant_id"]
    searches = [
        "/assistants/search",
        "/threads/search",
        "/runs/crons/search",
        f"/assistants/{assistant_id}/versions",
        "/store/items/search",
    ]
    for path in searches:
        for offset in (HUGE, MAX_OFFSET + 1):
            _names_offset(api.post(path, json={"offset": offset}))
        at_bound = api.post(path, json={"offset": MAX_OFFSET})
        assert at_bound.status_code == 200, (path, at_bound.text)
    _names_offset(api.get(f"/threads/{thread_id}/runs", params={"offset": HUGE}))
    assert api.get(f"/threads/{thread_id}/runs", params={"offset": MAX_OFFSET}).json() == []
    _names_offset(api.get("/users", params={"offset": HUGE}))
