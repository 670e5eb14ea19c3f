"""The isolation matrix: with the built-in authenticator, user B (bob) tries every route of both
APIs (and MCP, A2A) on user A's (alice's) objects; every cell answers 404 or 403 (or, for lists
and searches, answers without them), and no response carries anything of alice's.

Alice's objects carry a secret marker in their names, metadata and contents; a cell fails if the
marker or alice's email appears in bob's response. A last test checks that every route the app
serves is a cell of the matrix (or one of the few public routes), so a route added later without
ownership fails here.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.app import create_app
from tests.integration.auth_support import BUILTIN_PROJECT, client_with_key, make_keys
from tests.support import make_settings, running_server

MARK = f"alice-secret-{secrets.token_hex(6)}"
ALICE, BOB, ROOT = "alice@example.com", "bob@example.com", "root@example.com"
MESSAGES = {"messages": [{"role": "user", "content": "who am I?"}]}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@dataclass
class World:
    """Alice's objects (ids by name), bob's own few, and the three clients."""

    url: str
    ids: dict[str, str] = field(default_factory=dict)
    clients: dict[str, httpx.Client] = field(default_factory=dict)


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


@pytest.fixture(scope="module")
def world(
    database_url: str, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    keys = make_keys(database_url, {ALICE: False, BOB: False, ROOT: True})
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        langgraph_config=BUILTIN_PROJECT,
        auth="builtin",
        runs_per_minute=0,
        runs_in_flight_per_user=0,
    )
    with (
        running_server(settings) as url,
        client_with_key(url, keys[ALICE]) as alice,
        client_with_key(url, keys[BOB]) as bob,
        client_with_key(url, keys[ROOT]) as root,
    ):
        w = World(url=url, clients={"alice": alice, "bob": bob, "root": root})
        ids = w.ids
        (me,) = _ok(alice.get("/users"))["items"]
        ids["user_id"] = me["id"]
        (bob_me,) = _ok(bob.get("/users"))["items"]
        ids["bob"] = bob_me["id"]
        marked = {"note": MARK}
        agent = {"name": f"{MARK}-agent", "graph_id": "whoami", "metadata": marked}
        ids["agent_id"] = _ok(alice.post("/agents", json=agent))["id"]
        assistant = {"graph_id": "whoami", "name": f"{MARK}-assistant", "metadata": marked}
        ids["assistant_id"] = _ok(alice.post("/assistants", json=assistant))["assistant_id"]
        conversation = {
            "user_id": me["id"],
            "agent_id": ids["agent_id"],
            "title": MARK,
            "metadata": marked,
        }
        ids["conversation_id"] = _ok(alice.post("/conversations", json=conversation))["id"]
        message = {"sender": "user", "content": MARK}
        _ok(alice.post(f"/conversations/{ids['conversation_id']}/messages", json=message))
        ids["thread_id"] = thread = _ok(alice.post("/threads", json={"metadata": marked}))[
            "thread_id"
        ]
        run = {"assistant_id": ids["assistant_id"], "input": MESSAGES, "metadata": marked}
        ids["run_id"] = _ok(alice.post(f"/threads/{thread}/runs", json=run))["run_id"]
        _ok(alice.get(f"/threads/{thread}/runs/{ids['run_id']}/join"))
        state = _ok(alice.get(f"/threads/{thread}/state"))
        assert state["values"]["who"] == me["id"]  # the run executed as alice
        ids["checkpoint_id"] = state["checkpoint_id"]
        ids["pending_thread"] = waiting = _ok(alice.post("/threads", json={"metadata": marked}))[
            "thread_id"
        ]
        later = {**run, "after_seconds": 3600}
        ids["pending_run"] = _ok(alice.post(f"/threads/{waiting}/runs", json=later))["run_id"]
        cron = {"assistant_id": ids["assistant_id"], "schedule": "0 0 1 1 *", "metadata": marked}
        ids["cron_id"] = _ok(alice.post(f"/threads/{thread}/runs/crons", json=cron))["cron_id"]
        _ok(alice.post("/runs/crons", json=cron))
        item = {"namespace": [me["id"], "notes"], "key": "k", "value": {"text": MARK}}
        _ok(alice.put("/store/items", json=item))
        _ok(alice.put(f"/users/{me['id']}/memories/k", json={"value": {"text": MARK}}))
        upload = tmp_path_factory.mktemp("alice") / "alice.txt"
        upload.write_text(f"The launch code is {MARK}.", encoding="utf-8")
        with upload.open("rb") as handle:
            files = {"file": ("alice.txt", handle, "text/plain")}
            document = alice.post("/documents", files=files, data={"collection": "alice_docs"})
        ids["document_id"] = _ok(document)["id"]
        said = {"messageId": "m1", "role": "user", "parts": [{"kind": "text", "text": MARK}]}
        sent = alice.post(
            f"/a2a/{ids['assistant_id']}", json=_a2a("message/send", {"message": said})
        )
        ids["task_id"] = _ok(sent)["result"]["id"]
        ids["bob_thread"] = _ok(bob.post("/threads", json={}))["thread_id"]
        bobs = {"name": "bobs", "graph_id": "whoami"}
        ids["bob_agent"] = _ok(bob.post("/agents", json=bobs))["id"]
        yield w


def _alices_tool(ids: dict[str, str]) -> str:
    """The MCP tool name of alice's assistant (its name and the start of its id)."""
    return f"{MARK}-assistant-{ids['assistant_id'][:8]}"


def _a2a(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


def _mcp(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


Body = Callable[[dict[str, str]], Any]
Check = Callable[[World, httpx.Response], None]


@dataclass(frozen=True)
class Cell:
    """Bob tries one route on alice's objects: what he sends, and what he may get back."""

    label: str
    method: str
    route: str  # as the app declares it (path parameters in braces)
    expect: frozenset[int] = frozenset({404})
    fill: dict[str, str] = field(default_factory=dict)  # path parameter -> id name
    query: Body | None = None
    body: Body | None = None
    check: Check | None = None
    echoes: Body | None = None  # what of bob's own request the answer may repeat

    def path(self, ids: dict[str, str]) -> str:
        names = {name: ids[self.fill.get(name, name)] for name in _params(self.route)}
        return self.route.format(**names)


def _params(route: str) -> list[str]:
    return [part[1:-1] for part in route.split("/") if part.startswith("{")]


NOT_FOUND = frozenset({404})
FORBIDDEN = frozenset({403})
LISTED = frozenset({200})
RPC = frozenset({200})  # JSON-RPC answers errors in the body


def _rpc_error(world: World, response: httpx.Response) -> None:
    assert "error" in response.json(), response.text


def _alice_run_still_pending(world: World, response: httpx.Response) -> None:
    ids = world.ids
    run = world.clients["alice"].get(f"/threads/{ids['pending_thread']}/runs/{ids['pending_run']}")
    assert run.json()["status"] == "pending"


def _owner_is_bob(world: World, response: httpx.Response) -> None:
    assert response.json()["metadata"]["owner"] == world.ids["bob"]


def _no_tool_of_alice(world: World, response: httpx.Response) -> None:
    tools = response.json()["result"]["tools"]
    assert tools
    assert all(MARK not in tool["name"] for tool in tools)


def _tool_error(world: World, response: httpx.Response) -> None:
    body = response.json()
    assert "error" in body or body["result"]["isError"], response.text


def _zero(world: World, response: httpx.Response) -> None:
    assert response.json() == 0


def _thread_survives(world: World, response: httpx.Response) -> None:
    assert response.json() == {"pruned_count": 0}
    alice = world.clients["alice"]
    assert alice.get(f"/threads/{world.ids['thread_id']}").status_code == 200


def _only_bob(world: World, response: httpx.Response) -> None:
    assert [user["id"] for user in response.json()["items"]] == [world.ids["bob"]]


def _no_hits(world: World, response: httpx.Response) -> None:
    assert response.json()["hits"] == []


MATRIX: tuple[Cell, ...] = (
    # -- users -----------------------------------------------------------------------------
    Cell("users: create someone", "POST", "/users", FORBIDDEN,
         body=lambda ids: {"email": "eve@example.com", "name": "Eve"}),
    Cell("users: list", "GET", "/users", LISTED, check=_only_bob),
    Cell("users: read", "GET", "/users/{user_id}"),
    Cell("users: update", "PATCH", "/users/{user_id}", body=lambda ids: {"name": "Mallory"}),
    Cell("users: delete", "DELETE", "/users/{user_id}"),
    Cell("users: conversations", "GET", "/users/{user_id}/conversations"),
    # -- agents ----------------------------------------------------------------------------
    Cell("agents: create forging the owner", "POST", "/agents", frozenset({201}),
         body=lambda ids: {"name": "forged", "graph_id": "whoami",
                           "metadata": {"owner": ids["user_id"]}},
         check=_owner_is_bob),
    Cell("agents: list", "GET", "/agents", LISTED),
    Cell("agents: read", "GET", "/agents/{agent_id}"),
    Cell("agents: update", "PATCH", "/agents/{agent_id}", body=lambda ids: {"name": "mine"}),
    Cell("agents: delete", "DELETE", "/agents/{agent_id}"),
    # -- conversations and messages --------------------------------------------------------
    Cell("conversations: create for alice", "POST", "/conversations",
         body=lambda ids: {"user_id": ids["user_id"], "agent_id": ids["bob_agent"]}),
    Cell("conversations: create with alice's agent", "POST", "/conversations",
         body=lambda ids: {"user_id": ids["bob"], "agent_id": ids["agent_id"]}),
    Cell("conversations: list", "GET", "/conversations", LISTED),
    Cell("conversations: list alice's", "GET", "/conversations",
         query=lambda ids: {"user_id": ids["user_id"]}),
    Cell("conversations: read", "GET", "/conversations/{conversation_id}"),
    Cell("conversations: update", "PATCH", "/conversations/{conversation_id}",
         body=lambda ids: {"title": "mine"}),
    Cell("conversations: delete", "DELETE", "/conversations/{conversation_id}"),
    Cell("messages: read", "GET", "/conversations/{conversation_id}/messages"),
    Cell("messages: add", "POST", "/conversations/{conversation_id}/messages",
         body=lambda ids: {"sender": "user", "content": "injected"}),
    # -- /chat -------------------------------------------------------------------------------
    Cell("chat: alice's conversation", "POST", "/chat",
         body=lambda ids: {"conversation_id": ids["conversation_id"], "message": "hi"}),
    Cell("chat: as alice", "POST", "/chat",
         body=lambda ids: {"user_id": ids["user_id"], "agent_id": ids["bob_agent"],
                           "message": "hi"}),
    Cell("chat: alice's agent", "POST", "/chat",
         body=lambda ids: {"user_id": ids["bob"], "agent_id": ids["agent_id"], "message": "hi"}),
    Cell("chat/invoke: alice's conversation", "POST", "/chat/invoke",
         body=lambda ids: {"conversation_id": ids["conversation_id"], "message": "hi"}),
    Cell("tools: list (no one's)", "GET", "/tools", LISTED),
    # -- knowledge ---------------------------------------------------------------------------
    Cell("documents: upload into alice's collection", "POST", "/documents"),
    Cell("documents: list", "GET", "/documents", LISTED),
    Cell("documents: list alice's collection", "GET", "/documents", LISTED,
         query=lambda ids: {"collection": "alice_docs"}),
    Cell("documents: read", "GET", "/documents/{document_id}"),
    Cell("documents: delete", "DELETE", "/documents/{document_id}"),
    Cell("search: alice's collection", "POST", "/search", LISTED,
         body=lambda ids: {"query": "launch code", "filter": {"collection": "alice_docs"}},
         check=_no_hits),
    Cell("search: everything", "POST", "/search", LISTED,
         body=lambda ids: {"query": "launch code"}),
    # -- memories ----------------------------------------------------------------------------
    Cell("memories: list", "GET", "/users/{user_id}/memories"),
    Cell("memories: forget all", "DELETE", "/users/{user_id}/memories"),
    Cell("memories: write", "PUT", "/users/{user_id}/memories/{key}", fill={"key": "memory_key"},
         body=lambda ids: {"value": {"text": "I live on the moon"}}),
    Cell("memories: forget one", "DELETE", "/users/{user_id}/memories/{key}",
         fill={"key": "memory_key"}),
    # -- runs on a thread --------------------------------------------------------------------
    Cell("runs: create", "POST", "/threads/{thread_id}/runs",
         body=lambda ids: {"assistant_id": "whoami", "input": MESSAGES}),
    Cell("runs: create with if_not_exists=create", "POST", "/threads/{thread_id}/runs",
         body=lambda ids: {"assistant_id": "whoami", "input": MESSAGES,
                           "if_not_exists": "create"}),
    Cell("runs: create with alice's assistant", "POST", "/threads/{thread_id}/runs",
         fill={"thread_id": "bob_thread"},
         body=lambda ids: {"assistant_id": ids["assistant_id"], "input": MESSAGES}),
    Cell("runs: stream", "POST", "/threads/{thread_id}/runs/stream",
         body=lambda ids: {"assistant_id": "whoami", "input": MESSAGES}),
    Cell("runs: wait", "POST", "/threads/{thread_id}/runs/wait",
         body=lambda ids: {"assistant_id": "whoami", "input": MESSAGES}),
    Cell("runs: list", "GET", "/threads/{thread_id}/runs"),
    Cell("runs: read", "GET", "/threads/{thread_id}/runs/{run_id}"),
    Cell("runs: delete", "DELETE", "/threads/{thread_id}/runs/{run_id}"),
    Cell("runs: join", "GET", "/threads/{thread_id}/runs/{run_id}/join"),
    Cell("runs: join the stream", "GET", "/threads/{thread_id}/runs/{run_id}/stream"),
    Cell("runs: cancel", "POST", "/threads/{thread_id}/runs/{run_id}/cancel"),
    Cell("runs: webhook to the host", "POST", "/threads/{thread_id}/runs",
         frozenset({422}), fill={"thread_id": "bob_thread"},
         body=lambda ids: {"assistant_id": "whoami", "input": MESSAGES,
                           "webhook": "http://127.0.0.1:9/hook"}),
    # -- stateless runs ------------------------------------------------------------------------
    Cell("stateless: alice's assistant", "POST", "/runs",
         body=lambda ids: {"assistant_id": ids["assistant_id"], "input": MESSAGES}),
    Cell("stateless: stream alice's assistant", "POST", "/runs/stream",
         body=lambda ids: {"assistant_id": ids["assistant_id"], "input": MESSAGES}),
    Cell("stateless: wait on alice's assistant", "POST", "/runs/wait",
         body=lambda ids: {"assistant_id": ids["assistant_id"], "input": MESSAGES}),
    Cell("batch: on alice's thread", "POST", "/runs/batch",
         body=lambda ids: [{"assistant_id": "whoami", "thread_id": ids["thread_id"],
                            "input": MESSAGES}]),
    Cell("batch: alice's assistant", "POST", "/runs/batch",
         body=lambda ids: [{"assistant_id": ids["assistant_id"], "input": MESSAGES}]),
    Cell("cancel many: alice's run", "POST", "/runs/cancel",
         body=lambda ids: {"run_ids": [ids["pending_run"]]}),
    Cell("cancel many: alice's thread", "POST", "/runs/cancel",
         body=lambda ids: {"thread_id": ids["thread_id"]}),
    Cell("cancel many: every run", "POST", "/runs/cancel", frozenset({204}),
         body=lambda ids: {"status": "all"}, check=_alice_run_still_pending),
    # -- crons ---------------------------------------------------------------------------------
    Cell("crons: on alice's thread", "POST", "/threads/{thread_id}/runs/crons",
         body=lambda ids: {"assistant_id": "whoami", "schedule": "0 0 1 1 *"}),
    Cell("crons: with alice's assistant", "POST", "/runs/crons",
         body=lambda ids: {"assistant_id": ids["assistant_id"], "schedule": "0 0 1 1 *"}),
    Cell("crons: search", "POST", "/runs/crons/search", LISTED, body=lambda ids: {}),
    Cell("crons: count", "POST", "/runs/crons/count", LISTED, body=lambda ids: {},
         check=_zero),
    Cell("crons: read", "GET", "/runs/crons/{cron_id}"),
    Cell("crons: update", "PATCH", "/runs/crons/{cron_id}",
         body=lambda ids: {"schedule": "0 0 2 1 *"}),
    Cell("crons: delete", "DELETE", "/runs/crons/{cron_id}"),
    # -- assistants ----------------------------------------------------------------------------
    Cell("assistants: create over alice's id", "POST", "/assistants", frozenset({409}),
         body=lambda ids: {"graph_id": "whoami", "assistant_id": ids["assistant_id"],
                           "if_exists": "do_nothing"}),
    Cell("assistants: search", "POST", "/assistants/search", LISTED, body=lambda ids: {}),
    Cell("assistants: count", "POST", "/assistants/count", LISTED, body=lambda ids: {}),
    Cell("assistants: read", "GET", "/assistants/{assistant_id}"),
    Cell("assistants: update", "PATCH", "/assistants/{assistant_id}",
         body=lambda ids: {"name": "mine"}),
    Cell("assistants: delete", "DELETE", "/assistants/{assistant_id}"),
    Cell("assistants: graph", "GET", "/assistants/{assistant_id}/graph"),
    Cell("assistants: schemas", "GET", "/assistants/{assistant_id}/schemas"),
    Cell("assistants: subgraphs", "GET", "/assistants/{assistant_id}/subgraphs"),
    Cell("assistants: subgraphs in", "GET", "/assistants/{assistant_id}/subgraphs/{namespace}",
         fill={"namespace": "node"}),
    Cell("assistants: versions", "POST", "/assistants/{assistant_id}/versions",
         body=lambda ids: {}),
    Cell("assistants: set latest", "POST", "/assistants/{assistant_id}/latest",
         body=lambda ids: {"version": 1}),
    Cell("assistants: update a system one", "PATCH", "/assistants/{assistant_id}", FORBIDDEN,
         fill={"assistant_id": "system"}, body=lambda ids: {"name": "mine"}),
    Cell("assistants: delete a system one", "DELETE", "/assistants/{assistant_id}", FORBIDDEN,
         fill={"assistant_id": "system"}),
    # -- threads -------------------------------------------------------------------------------
    Cell("threads: create over alice's id", "POST", "/threads", frozenset({409}),
         body=lambda ids: {"thread_id": ids["thread_id"], "if_exists": "do_nothing"}),
    Cell("threads: seed with alice's assistant", "POST", "/threads",
         body=lambda ids: {"metadata": {"assistant_id": ids["assistant_id"]},
                           "supersteps": [{"updates": [{"values": {}, "as_node": "whoami"}]}]}),
    Cell("threads: search", "POST", "/threads/search", LISTED, body=lambda ids: {}),
    Cell("threads: count", "POST", "/threads/count", LISTED, body=lambda ids: {}),
    Cell("threads: prune", "POST", "/threads/prune", LISTED,
         body=lambda ids: {"thread_ids": [ids["thread_id"]]}, check=_thread_survives),
    Cell("threads: read", "GET", "/threads/{thread_id}"),
    Cell("threads: update", "PATCH", "/threads/{thread_id}",
         body=lambda ids: {"metadata": {"owner": ids["bob"]}}),
    Cell("threads: delete", "DELETE", "/threads/{thread_id}"),
    Cell("threads: copy", "POST", "/threads/{thread_id}/copy"),
    Cell("threads: state", "GET", "/threads/{thread_id}/state"),
    Cell("threads: update state", "POST", "/threads/{thread_id}/state",
         body=lambda ids: {"values": {"who": "bob"}}),
    Cell("threads: state at a checkpoint", "POST", "/threads/{thread_id}/state/checkpoint",
         body=lambda ids: {"checkpoint": {"checkpoint_id": ids["checkpoint_id"]}}),
    Cell("threads: state by checkpoint id", "GET", "/threads/{thread_id}/state/{checkpoint_id}"),
    Cell("threads: history", "POST", "/threads/{thread_id}/history", body=lambda ids: {}),
    Cell("threads: history by GET", "GET", "/threads/{thread_id}/history",
         query=lambda ids: {"limit": "5"}),
    Cell("threads: join the thread's stream", "GET", "/threads/{thread_id}/stream",
         query=lambda ids: {"stream_modes": "lifecycle"}),
    # -- store ---------------------------------------------------------------------------------
    Cell("store: put", "PUT", "/store/items", FORBIDDEN,
         body=lambda ids: {"namespace": [ids["user_id"], "notes"], "key": "k",
                           "value": {"text": "overwritten"}}),
    Cell("store: get", "GET", "/store/items", FORBIDDEN,
         query=lambda ids: {"namespace": f"{ids['user_id']}.notes", "key": "k"}),
    Cell("store: delete", "DELETE", "/store/items", FORBIDDEN,
         body=lambda ids: {"namespace": [ids["user_id"], "notes"], "key": "k"}),
    Cell("store: search alice's namespace", "POST", "/store/items/search", FORBIDDEN,
         body=lambda ids: {"namespace_prefix": [ids["user_id"]]}),
    Cell("store: search everything", "POST", "/store/items/search", LISTED,
         body=lambda ids: {"namespace_prefix": []}),
    Cell("store: alice's namespaces", "POST", "/store/namespaces", FORBIDDEN,
         body=lambda ids: {"prefix": [ids["user_id"]]}),
    Cell("store: every namespace", "POST", "/store/namespaces", LISTED, body=lambda ids: {}),
    # -- A2A and MCP ---------------------------------------------------------------------------
    Cell("a2a: message alice's assistant", "POST", "/a2a/{assistant_id}", RPC,
         body=lambda ids: _a2a("message/send", {"message": {
             "messageId": "b1", "role": "user", "parts": [{"kind": "text", "text": "hi"}]}}),
         check=_rpc_error),
    Cell("a2a: message on alice's context", "POST", "/a2a/{assistant_id}", RPC,
         fill={"assistant_id": "system"},
         body=lambda ids: _a2a("message/send", {"message": {
             "messageId": "b2", "role": "user", "contextId": ids["thread_id"],
             "parts": [{"kind": "text", "text": "hi"}]}}),
         check=_rpc_error),
    Cell("a2a: alice's task", "POST", "/a2a/{assistant_id}", RPC, fill={"assistant_id": "system"},
         body=lambda ids: _a2a("tasks/get", {"id": ids["task_id"]}), check=_rpc_error),
    Cell("a2a: cancel alice's task", "POST", "/a2a/{assistant_id}", RPC,
         fill={"assistant_id": "system"},
         body=lambda ids: _a2a("tasks/cancel", {"id": ids["task_id"]}), check=_rpc_error),
    Cell("a2a: alice's agent card", "GET", "/.well-known/agent-card.json",
         query=lambda ids: {"assistant_id": ids["assistant_id"]}),
    Cell("mcp: list tools", "POST", "/mcp", RPC,
         body=lambda ids: _mcp("tools/list", {}), check=_no_tool_of_alice),
    Cell("mcp: call alice's assistant", "POST", "/mcp", RPC,
         body=lambda ids: _mcp("tools/call", {"name": _alices_tool(ids), "arguments": MESSAGES}),
         check=_tool_error, echoes=_alices_tool),
)  # fmt: skip

# Cells that only read: alice herself gets 200 from each (so a 404 for bob is ownership, not a
# wrong path).
READS = {
    "users: read", "users: conversations", "agents: read", "conversations: list alice's",
    "conversations: read", "messages: read", "documents: read", "memories: list", "runs: list",
    "runs: read", "runs: join", "runs: join the stream", "assistants: read", "assistants: graph",
    "assistants: schemas", "assistants: subgraphs", "assistants: subgraphs in",
    "assistants: versions", "threads: read", "threads: state", "threads: state at a checkpoint",
    "threads: state by checkpoint id", "threads: history", "threads: history by GET",
    "crons: read", "store: get",
    "store: search alice's namespace", "store: alice's namespaces", "a2a: alice's agent card",
}  # fmt: skip

# Routes everyone may call (no data of anyone): health, server info, the API docs, the page.
PUBLIC = {
    ("GET", "/ok"),
    ("GET", "/healthz"),
    ("GET", "/info"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/openapi.json"),
    ("GET", "/"),
    ("GET", "/web"),
    ("GET", "/web/{name}"),
}
# Methods of /mcp that carry no tool call (the stateless transport refuses them).
MCP_OTHER = {("GET", "/mcp"), ("DELETE", "/mcp")}


def _ids(world: World) -> dict[str, str]:
    return {**world.ids, "system": "whoami", "memory_key": "k", "node": "whoami"}


def _request(cell: Cell, ids: dict[str, str]) -> dict[str, Any]:
    request: dict[str, Any] = {}
    if cell.query is not None:
        request["params"] = cell.query(ids)
    if cell.body is not None:
        request["json"] = cell.body(ids)
    if cell.route == "/documents" and cell.method == "POST":
        request["files"] = {"file": ("bob.txt", b"bob was here", "text/plain")}
        request["data"] = {"collection": "alice_docs"}
    if cell.route == "/mcp":
        request["headers"] = MCP_HEADERS
    return request


@pytest.mark.parametrize("cell", MATRIX, ids=[cell.label for cell in MATRIX])
def test_bob_cannot_reach_alices_object(world: World, cell: Cell) -> None:
    ids = _ids(world)
    request = _request(cell, ids)
    response = world.clients["bob"].request(cell.method, cell.path(ids), **request)
    assert response.status_code in cell.expect, (
        f"{cell.label}: {response.status_code} {response.text}"
    )
    answer = response.text.replace(cell.echoes(ids), "") if cell.echoes else response.text
    assert MARK not in answer, f"{cell.label} leaked alice's data: {response.text}"
    assert ALICE not in response.text
    if cell.check is not None:
        cell.check(world, response)


@pytest.mark.parametrize("label", sorted(READS))
def test_alice_reads_what_bob_cannot(world: World, label: str) -> None:
    (cell,) = [cell for cell in MATRIX if cell.label == label]
    ids = _ids(world)
    response = world.clients["alice"].request(cell.method, cell.path(ids), **_request(cell, ids))
    assert response.status_code == 200, f"{label}: {response.text}"


def test_alices_objects_are_intact_and_hers(world: World) -> None:
    """After every cell, alice still has everything, and the admin sees it too."""
    alice, root = world.clients["alice"], world.clients["root"]
    ids = world.ids
    for path in (
        f"/agents/{ids['agent_id']}",
        f"/assistants/{ids['assistant_id']}",
        f"/conversations/{ids['conversation_id']}",
        f"/threads/{ids['thread_id']}",
        f"/runs/crons/{ids['cron_id']}",
        f"/documents/{ids['document_id']}",
        f"/users/{ids['user_id']}",
    ):
        for client in (alice, root):
            response = client.get(path)
            assert response.status_code == 200, f"{path}: {response.text}"
            assert MARK in response.text or path.startswith("/users") or path.startswith("/doc")
    _alice_run_still_pending(world, httpx.Response(204))  # bob's cancels passed it by
    memories = alice.get(f"/users/{ids['user_id']}/memories").json()["items"]
    assert sorted(m["namespace"][-1] for m in memories) == ["memories", "notes"]
    assert {m["value"]["text"] for m in memories} == {MARK}
    item = alice.get("/store/items", params={"namespace": f"{ids['user_id']}.notes", "key": "k"})
    assert item.json()["value"] == {"text": MARK}
    messages = alice.get(f"/conversations/{ids['conversation_id']}/messages").json()["items"]
    assert [m["content"] for m in messages] == [MARK]
    everyone = {user["email"] for user in root.get("/users").json()["items"]}
    assert {ALICE, BOB, ROOT} <= everyone


def test_every_route_is_a_cell_of_the_matrix(database_url: str, data_dir: Path) -> None:
    """A route the app serves that is neither public nor in the matrix fails here."""
    app = create_app(
        make_settings(database_url, data_dir, langgraph_config=BUILTIN_PROJECT, auth="builtin")
    )
    served = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    served |= {("GET", "/"), ("GET", "/web"), ("GET", "/web/{name}")}
    served |= {("POST", "/mcp")} | MCP_OTHER
    covered = {(cell.method, cell.route) for cell in MATRIX}
    missing = served - covered - PUBLIC - MCP_OTHER
    assert not missing, f"routes without an isolation cell: {sorted(missing)}"
    assert len(MATRIX) >= len(served - PUBLIC - MCP_OTHER)


def test_a_request_without_a_key_is_refused_everywhere_but_the_public_routes(
    world: World,
) -> None:
    with httpx.Client(base_url=world.url, timeout=30) as anonymous:
        for cell in MATRIX:
            if cell.route == "/documents" and cell.method == "POST":
                continue  # a multipart body; the same route is refused below as a GET
            response = anonymous.request(cell.method, cell.path(_ids(world)))
            assert response.status_code == 401, f"{cell.label}: {response.text}"
            assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/documents").status_code == 401
        for method, path in sorted(PUBLIC - {("GET", "/web/{name}")}):
            assert anonymous.request(method, path).status_code in (200, 307), path
        assert anonymous.get("/web/app.js").status_code == 200
        wrong = anonymous.get("/threads/" + str(uuid.uuid4()), headers={"X-Api-Key": "sb_nope"})
        assert wrong.status_code == 401
        assert "not valid" in wrong.json()["detail"]
