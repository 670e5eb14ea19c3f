"""Switchboard against `langgraph dev`: the same langgraph-sdk calls, on the same project
(tests/projects/parity), give a client the same answers — status codes for bad input and
unknown ids, the fields of every object, pagination, thread search `extract`, the store's
missing items, update_state's answer, stream event names.

Only what a client relies on is compared; ids and timestamps differ by nature. Where
`langgraph dev` itself misbehaves (a 500 for `get_history(before=...)`, a 200 for a run
join of an unknown id), or Switchboard answers better on purpose (docs/agent_api.md), the
test does not ask for the same answer.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from server.agent_api.configurable import BOTH
from tests.support import LANGGRAPH, ROOT, langgraph_dev, make_settings, running_server

PROJECT = ROOT / "tests" / "projects" / "parity" / "langgraph.json"
NIL = str(uuid.UUID(int=7))
BOGUS: Any = "bogus"  # a value the SDK's types refuse, sent on purpose

Exercise = Callable[[LangGraphClient, str], Awaitable[Any]]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the project for each run of the module: `langgraph dev` keeps its
    in-memory state in the project's `.langgraph_api/` across restarts."""
    if not LANGGRAPH.exists():
        pytest.skip("langgraph-cli[inmem] is not installed (pip install -e '.[dev]')")
    folder = tmp_path_factory.mktemp("parity") / "parity"
    shutil.copytree(PROJECT.parent, folder, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    return folder / PROJECT.name


@pytest.fixture(scope="module")
def switchboard(project: Path, database_url: str, data_dir: Path) -> Iterator[str]:
    """Switchboard serving the parity project."""
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        langgraph_config=project,
        cron_poll_interval_s=0.2,  # crons fire about as soon as langgraph dev's
        cron_min_interval_s=1,
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture(scope="module")
def dev(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`langgraph dev` serving the same project."""
    with langgraph_dev(project, log=tmp_path_factory.mktemp("langgraph-dev") / "dev.log") as url:
        yield url


@pytest.fixture
def both(switchboard: str, dev: str) -> Callable[[Exercise], Awaitable[tuple[Any, Any]]]:
    """Run one exercise against each server; answer (switchboard's, dev's)."""

    async def run(exercise: Exercise) -> tuple[Any, Any]:
        ours = await exercise(get_client(url=switchboard), switchboard)
        theirs = await exercise(get_client(url=dev), dev)
        return ours, theirs

    return run


async def status_of(call: Awaitable[Any]) -> int:
    """200 when the SDK call succeeds, else the status code of its error."""
    try:
        await call
    except httpx.HTTPStatusError as error:
        return error.response.status_code
    return 200


async def test_a_missing_store_item_reads_as_null(both: Any) -> None:
    async def exercise(client: LangGraphClient, url: str) -> Any:
        namespace = ["parity", uuid.uuid4().hex]
        await client.store.put_item(namespace, "k", {"text": "red apples"})
        found = await client.store.get_item(namespace, "k")
        await client.store.delete_item(namespace, "k")
        return (
            found["value"],
            await client.store.get_item(namespace, "k"),
            (await client.store.get_item(namespace, "never")),
        )

    ours, theirs = await both(exercise)
    assert ours == theirs == ({"text": "red apples"}, None, None)


async def test_update_state_answers_the_checkpoint_and_its_deprecated_fields(both: Any) -> None:
    async def exercise(client: LangGraphClient, url: str) -> Any:
        thread = await client.threads.create()
        await client.runs.wait(thread["thread_id"], "counter", input={"count": 0})
        written: Any = await client.threads.update_state(
            thread["thread_id"], {"count": 5}, as_node="finish"
        )
        state = await client.threads.get_state(thread["thread_id"])
        return written, state

    for written, state in await both(exercise):
        assert set(written) == {"checkpoint", "configurable", "checkpoint_id"}
        assert written["checkpoint"]["checkpoint_id"] == written["checkpoint_id"]
        assert written["configurable"] == written["checkpoint"]
        assert written["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]


async def test_thread_search_extract_adds_the_extracted_values(both: Any) -> None:
    async def exercise(client: LangGraphClient, url: str) -> Any:
        tag = uuid.uuid4().hex
        metadata = {"tag": tag, "user": {"name": "ann"}, "labels": ["a", "b", "c"]}
        await client.threads.create(metadata=metadata)
        found = await client.threads.search(
            metadata={"tag": tag},
            select=["thread_id", "status"],
            extract={
                "name": "metadata.user.name",
                "last": "metadata.labels[-1]",
                "second": "metadata.labels[1]",
                "nothing": "metadata.user.name.deeper",
                "out_of_range": "metadata.labels[9]",
            },
        )
        async with httpx.AsyncClient(base_url=url) as http:
            refused = [
                (await http.post("/threads/search", json={"extract": extract})).status_code
                for extract in (
                    {"status": "metadata.tag"},  # a thread field
                    {"bad-alias": "metadata.tag"},
                    {"x": "runs.tag"},  # not a column it reads
                    {f"k{i}": "metadata.tag" for i in range(11)},  # over ten
                )
            ]
        return [(sorted(t), t["extracted"]) for t in found], refused

    ours, theirs = await both(exercise)
    assert ours == theirs
    rows, refused = ours
    assert rows == [
        (
            ["extracted", "status", "thread_id"],
            {"name": "ann", "last": "c", "second": "b", "nothing": None, "out_of_range": None},
        )
    ]
    assert refused == [422] * 4


async def test_history_is_also_served_by_get(both: Any) -> None:
    async def exercise(client: LangGraphClient, url: str) -> Any:
        thread = await client.threads.create()
        await client.runs.wait(thread["thread_id"], "counter", input={"count": 0})
        posted = await client.threads.get_history(thread["thread_id"], limit=3)
        async with httpx.AsyncClient(base_url=url) as http:
            path = f"/threads/{thread['thread_id']}/history"
            default = (await http.get(path)).json()
            two = (await http.get(path, params={"limit": 2})).json()
            before = (
                await http.get(
                    path,
                    params={"limit": 2, "before": posted[0]["checkpoint"]["checkpoint_id"]},
                )
            ).json()
        ids = [state["checkpoint"]["checkpoint_id"] for state in posted]
        return (
            [s["checkpoint"]["checkpoint_id"] for s in default] == ids[:1],
            [s["checkpoint"]["checkpoint_id"] for s in two] == ids[:2],
            [s["checkpoint"]["checkpoint_id"] for s in before] == ids[1:3],
        )

    ours, theirs = await both(exercise)
    assert ours == theirs == (True, True, True)


async def test_cron_search_sends_the_pagination_headers(both: Any) -> None:
    async def exercise(client: LangGraphClient, url: str) -> Any:
        thread = await client.threads.create()
        crons: list[Any] = [
            await client.crons.create_for_thread(
                thread["thread_id"], "counter", schedule="0 0 1 1 *", input={"count": 1}
            )
            for _ in range(3)
        ]
        pages = []
        async with httpx.AsyncClient(base_url=url) as http:
            for offset in (0, 2):
                page = await http.post(
                    "/runs/crons/search",
                    json={"thread_id": thread["thread_id"], "limit": 2, "offset": offset},
                )
                pages.append(
                    (
                        len(page.json()),
                        page.headers.get("X-Pagination-Total"),
                        page.headers.get("X-Pagination-Next"),
                    )
                )
        for cron in crons:
            await client.crons.delete(cron["cron_id"])
        return pages

    ours, theirs = await both(exercise)
    assert ours == theirs
    assert ours[1] == (1, "3", None)
    assert ours[0] == (2, "3", "2")


async def test_graphs_describe_themselves_alike(both: Any) -> None:
    """What Studio draws and the forms it builds: graph, schemas and subgraphs are the same."""

    async def exercise(client: LangGraphClient, url: str) -> Any:
        described = {}
        for graph_id in ("counter", "asker", "talker"):
            assistant_id = (await client.assistants.create(graph_id))["assistant_id"]
            described[graph_id] = (
                await client.assistants.get_schemas(assistant_id),
                await client.assistants.get_subgraphs(assistant_id, recurse=True),
                await client.assistants.get_graph(assistant_id, xray=True),
            )
        return described

    ours, theirs = await both(exercise)
    assert ours == theirs
    assert ours["counter"][0]["state_schema"]["title"] == "counter_state"


async def test_unknown_ids_and_bad_bodies_get_the_same_status_codes(both: Any) -> None:
    """Where both servers answer an error the same way a client can tell (the status), they
    keep doing so; Switchboard's bodies also name the field."""

    async def exercise(client: LangGraphClient, url: str) -> Any:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        await client.runs.wait(tid, "counter", input={"count": 0})
        calls: dict[str, Awaitable[Any]] = {
            "assistants.get": client.assistants.get(NIL),
            "assistants.update": client.assistants.update(NIL, name="x"),
            "assistants.delete": client.assistants.delete(NIL),
            "assistants.get_graph": client.assistants.get_graph(NIL),
            "assistants.get_schemas": client.assistants.get_schemas(NIL),
            "assistants.get_subgraphs": client.assistants.get_subgraphs(NIL),
            "assistants.get_versions": client.assistants.get_versions(NIL),
            "assistants.search.sort_by": client.assistants.search(sort_by=BOGUS),
            "assistants.search.limit": client.assistants.search(limit=0),
            "assistants.search.select": client.assistants.search(select=[BOGUS]),
            "threads.get": client.threads.get(NIL),
            "threads.update": client.threads.update(NIL, metadata={"x": 1}),
            "threads.delete": client.threads.delete(NIL),
            "threads.get_state": client.threads.get_state(NIL),
            "threads.update_state": client.threads.update_state(NIL, {"count": 1}),
            "threads.get_history": client.threads.get_history(NIL),
            "threads.search.status": client.threads.search(status=BOGUS),
            "threads.search.sort_by": client.threads.search(sort_by=BOGUS),
            "threads.create.twice": client.threads.create(thread_id=tid, if_exists="raise"),
            "runs.list": client.runs.list(NIL),
            "runs.get": client.runs.get(tid, NIL),
            "runs.delete": client.runs.delete(tid, NIL),
            "runs.cancel": client.runs.cancel(tid, NIL),
            "runs.wait.thread": client.runs.wait(NIL, "counter", input={}),
            "runs.wait.assistant": client.runs.wait(tid, NIL, input={}),
            "runs.create.strategy": client.runs.create(
                tid,
                "counter",
                input={},
                multitask_strategy=BOGUS,
            ),
            "runs.create.stream_mode": client.runs.create(
                tid,
                "counter",
                input={},
                stream_mode=BOGUS,
            ),
            "crons.delete": client.crons.delete(NIL),
            "crons.create.assistant": client.crons.create(NIL, schedule="0 0 1 1 *"),
            "crons.create.schedule": client.crons.create("counter", schedule="bogus"),
            "assistants.set_latest": client.assistants.set_latest(
                (await client.assistants.create("counter"))["assistant_id"], 99
            ),
        }
        codes = {name: await status_of(call) for name, call in calls.items()}
        async with httpx.AsyncClient(base_url=url) as http:
            for name, method, path, body in [
                ("raw.threads.bad_id", "GET", "/threads/not-a-uuid", None),
                ("raw.runs.bad_id", "GET", f"/threads/{tid}/runs/not-a-uuid", None),
                ("raw.assistants.no_graph", "POST", "/assistants", {}),
                ("raw.threads.metadata", "POST", "/threads", {"metadata": "x"}),
                ("raw.runs.no_assistant", "POST", f"/threads/{tid}/runs", {}),
                ("raw.threads.search.limit", "POST", "/threads/search", {"limit": 100000}),
                ("raw.history.limit", "POST", f"/threads/{tid}/history", {"limit": 0}),
            ]:
                answer = await http.request(method, path, json=body)
                codes[name] = answer.status_code
        return codes

    ours, theirs = await both(exercise)
    assert ours == theirs
    assert {code for code in ours.values()} <= {404, 409, 422}


async def test_objects_carry_every_field_langgraph_dev_gives_them(both: Any) -> None:
    """Each object a client reads has at least the fields `langgraph dev` gives it (Switchboard
    may add some: `interrupts` on every thread, `cancel_reason` on runs). Left out: a run's
    `langsmith_session_name` (no LangSmith here) and a thread's `error` (the failed run's
    error, which `runs.get`/`join` give); neither is in the SDK's types."""

    async def exercise(client: LangGraphClient, url: str) -> Any:
        assistant = await client.assistants.create("counter", name="fields")
        thread = await client.threads.create(metadata={"k": "v"})
        tid = thread["thread_id"]
        run = await client.runs.create(tid, "counter", input={"count": 0})
        await client.runs.join(tid, run["run_id"])
        namespace = ["parity", uuid.uuid4().hex]
        await client.store.put_item(namespace, "k", {"text": "x"})
        cron: Any = await client.crons.create_for_thread(tid, "counter", schedule="0 0 1 1 *")
        fields = {
            "assistant": assistant,
            "assistant.version": (await client.assistants.get_versions(assistant["assistant_id"]))[
                0
            ],
            "thread": await client.threads.get(tid),
            "run": await client.runs.get(tid, run["run_id"]),
            "state": await client.threads.get_state(tid),
            "history": (await client.threads.get_history(tid, limit=1))[0],
            "store.item": await client.store.get_item(namespace, "k"),
            "store.search": (await client.store.search_items(namespace))["items"][0],
            "cron": cron,
            "schemas": await client.assistants.get_schemas(assistant["assistant_id"]),
            "graph": await client.assistants.get_graph(assistant["assistant_id"], xray=True),
            "info": (info := (await httpx.AsyncClient(base_url=url).get("/info")).json()),
            # Studio turns features on by these flags.
            "info.flags": info["flags"],
            "info.host": info["host"],
        }
        await client.crons.delete(cron["cron_id"])
        return {name: set(value) for name, value in fields.items()}

    ours, theirs = await both(exercise)
    theirs["run"].discard("langsmith_session_name")
    theirs["thread"].discard("error")
    missing = {name: theirs[name] - ours[name] for name in theirs if theirs[name] - ours[name]}
    assert missing == {}


async def test_studio_preflights_pass_with_private_network_access(both: Any) -> None:
    """Chrome's preflight of Studio's calls (its headers, Private Network Access to loopback):
    both servers grant the private network, and Switchboard the request too (`langgraph dev`
    answers 400, Starlette refusing what its CORS was not told about, with the grant added on
    top); neither grants it to an origin its CORS refuses (`langgraph dev` allows every one)."""

    async def exercise(client: LangGraphClient, url: str) -> Any:
        asked = {
            "Origin": "https://smith.langchain.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key,x-auth-scheme,x-request-id",
            "Access-Control-Request-Private-Network": "true",
        }
        async with httpx.AsyncClient(base_url=url) as http:
            answer = await http.options("/runs/stream", headers=asked)
        return answer.status_code, answer.headers

    (ours, our_headers), (_, their_headers) = await both(exercise)
    for headers in (our_headers, their_headers):
        assert headers["access-control-allow-private-network"] == "true"
        assert headers["access-control-allow-headers"] == (
            "content-type,x-api-key,x-auth-scheme,x-request-id"
        )
        assert "POST" in headers["access-control-allow-methods"]
    assert ours == 200


async def test_stream_modes_send_the_same_events(both: Any) -> None:
    """Every stream mode sends the same events in the same order, and values/updates/custom
    the same payloads (Switchboard ends a stream with `end`, which langgraph dev leaves out)."""
    modes: list[Any] = ["values", "updates", "custom", "debug", "tasks", "checkpoints", "events"]

    async def exercise(client: LangGraphClient, url: str) -> Any:
        seen: dict[str, Any] = {}
        for mode in modes:
            thread = await client.threads.create()
            parts = [
                (part.event, part.data)
                async for part in client.runs.stream(
                    thread["thread_id"],
                    "counter",
                    input={"count": 0},
                    stream_mode=mode,
                )
            ]
            parts = [p for p in parts if p[0] != "end"]
            if mode in ("values", "updates", "custom"):
                seen[mode] = parts[1:]
            elif mode == "events":
                seen[mode] = [(event, data["event"], data["name"]) for event, data in parts[1:]]
            elif mode == "debug":  # useStream reads the checkpoints of debug events
                seen[mode] = [
                    (
                        event,
                        data["type"],
                        sorted(data["payload"]),
                        sorted(data["payload"].get("checkpoint") or {}),
                        sorted(data["payload"].get("parent_checkpoint") or {}),
                    )
                    for event, data in parts[1:]
                ]
            else:
                seen[mode] = [(event, sorted(data)) for event, data in parts[1:]]
        thread = await client.threads.create()
        seen["subgraphs"] = [
            part.event.split("|")[0] + ("|ns" if "|" in part.event else "")
            async for part in client.runs.stream(
                thread["thread_id"],
                "counter",
                input={"count": 0},
                stream_mode=["values", "updates"],
                stream_subgraphs=True,
            )
            if part.event != "end"
        ]
        question: Any = {"messages": [{"role": "user", "content": "hi"}]}
        chat_modes: list[Any] = ["messages-tuple", "messages"]
        for mode in chat_modes:
            thread = await client.threads.create()
            seen[f"talker {mode}"] = [
                _message_event(part.event, part.data)
                async for part in client.runs.stream(
                    thread["thread_id"],
                    "talker",
                    input=question,
                    stream_mode=mode,
                )
                if part.event not in ("metadata", "end")
            ]
        return seen

    ours, theirs = await both(exercise)
    assert ours == theirs
    assert [content for _, content, *_ in ours["talker messages-tuple"]] == [
        "hello",
        " ",
        "there,",
        " ",
        "friend",
    ]


def _message_event(event: str, data: Any) -> Any:
    """What a chat client reads of a `messages` event: the text, type and node of each
    message (`messages-tuple`: [chunk, metadata]; legacy: lists of messages, or metadata by
    message id)."""
    if event == "messages":
        chunk, metadata = data
        return (event, chunk["content"], chunk["type"], metadata["langgraph_node"])
    if event == "messages/metadata":
        return (event, [value["metadata"]["langgraph_node"] for value in data.values()])
    return (event, [(message["content"], message["type"]) for message in data])


async def test_multitask_strategies_and_cancels_end_runs_alike(both: Any) -> None:
    async def exercise(client: LangGraphClient, url: str) -> Any:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        first = await client.runs.create(tid, "sleeper", input={"count": 20})
        await asyncio.sleep(0.5)
        rejected = await status_of(
            client.runs.create(tid, "counter", input={}, multitask_strategy="reject")
        )
        queued = await client.runs.create(tid, "counter", input={"count": 1})
        await client.runs.cancel(tid, first["run_id"], wait=True)
        cancelled = (await client.runs.get(tid, first["run_id"]))["status"]
        await client.runs.join(tid, queued["run_id"])
        second = await client.runs.create(tid, "sleeper", input={"count": 20})
        await asyncio.sleep(0.5)
        interrupter = await client.runs.create(
            tid, "counter", input={"count": 1}, multitask_strategy="interrupt"
        )
        await client.runs.join(tid, interrupter["run_id"])
        third = await client.runs.create(tid, "sleeper", input={"count": 20})
        await asyncio.sleep(0.5)
        roller = await client.runs.create(
            tid, "counter", input={"count": 1}, multitask_strategy="rollback"
        )
        await client.runs.join(tid, roller["run_id"])
        return {
            "rejected": rejected,
            "cancelled": cancelled,
            "queued": (await client.runs.get(tid, queued["run_id"]))["status"],
            "interrupted": (await client.runs.get(tid, second["run_id"]))["status"],
            "rolled back": await status_of(client.runs.get(tid, third["run_id"])),
            "thread": (await client.threads.get(tid))["status"],
        }

    ours, theirs = await both(exercise)
    assert ours == theirs
    assert ours == {
        "rejected": 409,
        "cancelled": "interrupted",
        "queued": "success",
        "interrupted": "interrupted",
        "rolled back": 404,
        "thread": "idle",
    }


async def detail_of(call: Awaitable[Any]) -> tuple[int, Any]:
    """The status code and `detail` of the SDK call's error (200 and None when it succeeds)."""
    try:
        await call
    except httpx.HTTPStatusError as error:
        return error.response.status_code, error.response.json().get("detail")
    return 200, None


async def test_assistants_mirror_configurable_and_context(both: Any) -> None:
    """An assistant's `config.configurable` and `context` mirror each other on create, update
    and its versions; both at once is a 400 with langgraph-api's words."""

    async def exercise(client: LangGraphClient, url: str) -> Any:
        def kept(assistant: Any) -> Any:
            return assistant["config"].get("configurable"), assistant["context"]

        by_config = await client.assistants.create(
            "echo", config={"configurable": {"tone": "warm"}}
        )
        by_context = await client.assistants.create("echo", context={"tone": "cool"})
        aid = by_context["assistant_id"]
        updated = await client.assistants.update(aid, context={"tone": "dry", "level": 2})
        reconfigured = await client.assistants.update(aid, config={"configurable": {"tone": "wry"}})
        renamed = await client.assistants.update(aid, name="renamed")
        versions = await client.assistants.get_versions(aid)
        return {
            "create config": kept(by_config),
            "create context": kept(by_context),
            "update context": kept(updated),
            "update config": kept(reconfigured),
            "update name": kept(renamed),
            "versions": sorted((v["version"], *map(str, kept(v))) for v in versions),
            "both": await detail_of(
                client.assistants.create(
                    "echo", config={"configurable": {"tone": "a"}}, context={"tone": "b"}
                )
            ),
            "update both": await detail_of(
                client.assistants.update(
                    aid, config={"configurable": {"tone": "a"}}, context={"tone": "a"}
                )
            ),
        }

    ours, theirs = await both(exercise)
    assert ours == theirs
    assert ours["create config"] == ({"tone": "warm"}, {"tone": "warm"})
    assert ours["create context"] == ({"tone": "cool"}, {"tone": "cool"})
    assert ours["both"][0] == 400


async def test_runs_give_the_graph_its_declared_context(both: Any) -> None:
    """A run's `configurable` is its context too (and the other way round), merged over its
    assistant's; a graph is given only the keys its context schema declares (a dataclass, a
    TypedDict), every key when it has none; both at once is a 400."""

    async def exercise(client: LangGraphClient, url: str) -> Any:
        async def seen(graph: str, assistant: str | None = None, **kwargs: Any) -> Any:
            thread = await client.threads.create()
            state: Any = await client.runs.wait(
                thread["thread_id"], assistant or graph, input={}, **kwargs
            )
            return state.get("seen") if isinstance(state, dict) else state

        extra = {"tone": "warm", "level": 3, "junk": True}
        answers: dict[str, Any] = {}
        for graph in ("echo", "echo_typed", "echo_any"):
            answers[f"{graph} context"] = await seen(graph, context=extra)
            answers[f"{graph} configurable"] = await seen(graph, config={"configurable": extra})
            answers[f"{graph} nothing"] = await seen(graph)
        assistant = await client.assistants.create(
            "echo_typed", config={"configurable": {"tone": "dry", "junk": 1}}
        )
        answers["assistant"] = await seen("echo_typed", assistant["assistant_id"])
        answers["assistant and run"] = await seen(
            "echo_typed", assistant["assistant_id"], context={"level": 5}
        )
        thread = await client.threads.create()
        answers["both"] = await detail_of(
            client.runs.wait(
                thread["thread_id"],
                "echo",
                input={},
                config={"configurable": {"tone": "a"}},
                context={"tone": "a"},
            )
        )
        return answers

    ours, theirs = await both(exercise)
    assert ours == theirs
    assert ours["echo configurable"] == {"tone": "warm", "level": 3}
    assert ours["echo_typed context"] == {"tone": "warm", "level": 3}
    assert ours["echo_any configurable"] == {"tone": "warm", "level": 3, "junk": True}
    assert ours["both"][0] == 400


CLIENT_KEYS = ("tone", "level", "junk", "cron_id")  # the parity project's echo reports these


def _client_keys(values: Any, cron_id: str | None = None) -> Any:
    """The client's keys of each mapping in an echo graph's `values` (a cron's id as <cron>)."""
    return {
        name: {
            key: "<cron>" if value == cron_id else value
            for key, value in (shown or {}).items()
            if key in CLIENT_KEYS
        }
        for name, shown in (values or {}).items()
    }


async def test_a_given_context_drops_its_undeclared_keys_from_configurable(both: Any) -> None:
    """A run given `context` has the keys its graph's context schema drops taken out of its
    mirrored `configurable` too (the graph's config, the checkpoint's metadata); a run given
    `configurable` keeps all of them there."""

    async def exercise(client: LangGraphClient, url: str) -> Any:
        async def configured(graph: str, **kwargs: Any) -> Any:
            thread = await client.threads.create()
            values: Any = await client.runs.wait(thread["thread_id"], graph, input={}, **kwargs)
            metadata: Any = (await client.threads.get_state(thread["thread_id"]))["metadata"]
            return values["configured"], {k: metadata[k] for k in CLIENT_KEYS if k in metadata}

        extra = {"tone": "warm", "level": 3, "junk": True}
        answers: dict[str, Any] = {}
        for graph in ("echo", "echo_typed", "echo_any"):
            answers[f"{graph} context"] = await configured(graph, context=extra)
            answers[f"{graph} configurable"] = await configured(
                graph, config={"configurable": extra}
            )
        assistant = await client.assistants.create(
            "echo", config={"configurable": {"tone": "dry", "junk": 1}}
        )
        answers["assistant and run context"] = await configured(
            assistant["assistant_id"], context={"level": 5, "junk": 1}
        )
        answers["assistant and run configurable"] = await configured(
            assistant["assistant_id"], config={"configurable": {"level": 5}}
        )
        return answers

    ours, theirs = await both(exercise)
    assert ours == theirs
    kept = {"tone": "warm", "level": 3}
    assert ours["echo context"] == (kept, kept)
    assert ours["echo configurable"] == ({**kept, "junk": True},) * 2
    assert ours["echo_any context"] == ({**kept, "junk": True},) * 2
    assert ours["assistant and run context"] == ({"tone": "dry", "level": 5},) * 2


async def test_crons_runs_mirror_configurable_and_context(both: Any) -> None:
    """A cron's payload keeps `config` and `context` as given; each run it starts has its
    `configurable` (with `cron_id`) or its context as both, its graph given the declared keys.
    A cron given both: langgraph dev keeps it and refuses each of its runs (logged, never
    run), Switchboard answers the 400 a run gets, naming `context`."""

    async def exercise(client: LangGraphClient, url: str) -> Any:
        extra = {"tone": "warm", "level": 3, "junk": True}
        kinds: dict[str, Any] = {
            "context": {"context": extra},
            "configurable": {"config": {"configurable": extra, "tags": ["t"]}},
            "nothing": {},
        }
        crons: dict[str, tuple[str, str]] = {}
        answers: dict[str, Any] = {}
        for graph in ("echo", "echo_any"):
            for kind, kwargs in kinds.items():
                thread = await client.threads.create()
                cron: Any = await client.crons.create_for_thread(
                    thread["thread_id"], graph, schedule="* * * * * */1", input={}, **kwargs
                )
                payload = cron["payload"]
                configurable = dict((payload.get("config") or {}).get("configurable") or {})
                configurable.pop("cron_id", None)  # langgraph dev's payload shows its id
                answers[f"{graph} {kind} payload"] = (configurable, payload.get("context"))
                crons[f"{graph} {kind}"] = (thread["thread_id"], cron["cron_id"])
        thread = await client.threads.create()
        answers["both"] = await detail_of(
            client.crons.create_for_thread(
                thread["thread_id"],
                "echo",
                schedule="* * * * * */1",
                config={"configurable": {"tone": "a"}},
                context={"tone": "b"},
            )
        )
        deadline = asyncio.get_running_loop().time() + 30
        for name, (thread_id, cron_id) in crons.items():
            while True:
                values = (await client.threads.get_state(thread_id))["values"]
                if values or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.2)
            await client.crons.delete(cron_id)
            answers[f"{name} run"] = _client_keys(values, cron_id)
        if answers["both"][0] == 200:  # langgraph dev: kept, yet it never ran
            answers["both runs"] = len(await client.runs.list(thread["thread_id"]))
            (kept,) = await client.crons.search(thread_id=thread["thread_id"])
            await client.crons.delete(kept["cron_id"])
        return answers

    ours, theirs = await both(exercise)
    assert ours.pop("both") == (400, BOTH)
    assert theirs.pop("both") == (200, None)
    assert theirs.pop("both runs") == 0
    assert ours == theirs
    assert ours["echo configurable run"] == {
        "seen": {"tone": "warm", "level": 3},
        "configured": {"tone": "warm", "level": 3, "junk": True, "cron_id": "<cron>"},
    }
    assert ours["echo context run"]["configured"] == {
        "tone": "warm", "level": 3, "cron_id": "<cron>"
    }  # fmt: skip
    assert ours["echo_any nothing run"]["seen"] == {"cron_id": "<cron>"}


async def test_cron_updates_keep_config_and_context_as_given(both: Any) -> None:
    """An update's `context` or `config` replaces the payload's, as given."""

    async def exercise(client: LangGraphClient, url: str) -> Any:
        thread = await client.threads.create()
        answers = {}
        for kind, created, changed in (
            ("context", {"context": {"tone": "a"}}, {"context": {"tone": "b", "level": 1}}),
            (
                "config",
                {"config": {"configurable": {"tone": "a"}}},
                {"config": {"configurable": {"tone": "b"}}},
            ),
        ):
            cron: Any = await client.crons.create_for_thread(
                thread["thread_id"], "echo", schedule="0 0 1 1 *", **created
            )
            updated: Any = await client.crons.update(cron["cron_id"], **changed)
            payload = updated["payload"]
            configurable = dict((payload.get("config") or {}).get("configurable") or {})
            configurable.pop("cron_id", None)
            answers[kind] = (configurable, payload.get("context"))
            await client.crons.delete(cron["cron_id"])
        return answers

    ours, theirs = await both(exercise)
    assert ours == theirs
    assert ours == {"context": ({}, {"tone": "b", "level": 1}), "config": ({"tone": "b"}, None)}
