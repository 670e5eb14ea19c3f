"""Secret-looking config, context and metadata values are masked in every answer of the Agent
Server API and in webhooks, over real HTTP (langgraph-sdk) with a real webhook receiver, while
the graph still receives the real values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from server.redact import MASK, is_secret_name, mask_secrets
from tests.integration.webhook_support import WebhookReceiver, webhook_receiver
from tests.support import ROOT, make_settings, running_server

PROJECT = ROOT / "tests" / "projects" / "secrets" / "langgraph.json"
SECRETS = ("sk-assistant-real", "pw-context-real", "tok-nested-real", "sk-run-real", "tok-run-real")


@pytest.fixture(scope="module")
def server(database_url: str, data_dir: Path) -> Iterator[str]:
    """The `tell` graph's project; webhooks may reach the receiver on 127.0.0.1."""
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        langgraph_config=PROJECT,
        webhook_allowed_hosts=["127.0.0.1"],
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture
def client(server: str) -> SyncLangGraphClient:
    return get_sync_client(url=server, api_key=None)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


def _no_secret(shown: Any, *, but: tuple[str, ...] = ()) -> None:
    """No real secret anywhere in `shown` (a response body, or a list of them), outside the
    keys in `but` (the graph's own state, which repeats what it was told)."""
    if isinstance(shown, list):
        shown = [{k: v for k, v in item.items() if k not in but} for item in shown]
    elif isinstance(shown, dict):
        shown = {k: v for k, v in shown.items() if k not in but}
    text = json.dumps(shown, default=str)
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, text


def test_secret_names_are_found_by_their_words() -> None:
    for name in (
        *("api_key", "openaiApiKey", "OPENAI_API_KEY", "x-api-key", "access_token"),
        *("DB_PASSWORD", "client.secret", "apikey", "Authorization", "refreshToken"),
    ):
        assert is_secret_name(name), name
    for name in ("max_tokens", "keywords", "monkey", "model", "tokenizer", "secretary", "passage"):
        assert not is_secret_name(name), name
    masked = mask_secrets({"a": [{"token": "t", "n": 1}], "key": None, "ok": {"password": 3}})
    assert masked == {"a": [{"token": MASK, "n": 1}], "key": None, "ok": {"password": MASK}}


def test_assistant_config_and_context_are_masked_but_the_graph_gets_them(
    client: SyncLangGraphClient,
) -> None:
    assistant: dict[str, Any] = client.assistants.create(  # type: ignore[assignment]
        "tell",
        # Its context mirrors `configurable` (as langgraph-api; both at once is a 400).
        config={
            "configurable": {
                "api_key": "sk-assistant-real",
                "model": "m-1",
                "db_password": "pw-context-real",
                "nested": [{"access_token": "tok-nested-real"}],
            }
        },
        metadata={"signing_secret": "sk-assistant-real", "team": "blue"},
        name="masked",
    )
    shown_config = {
        "api_key": MASK,
        "model": "m-1",
        "db_password": MASK,
        "nested": [{"access_token": MASK}],
    }
    assert assistant["config"]["configurable"] == shown_config
    assert assistant["context"] == shown_config
    assert assistant["metadata"]["signing_secret"] == MASK
    assert assistant["metadata"]["team"] == "blue"
    assistant_id = assistant["assistant_id"]
    for shown in (
        assistant,
        client.assistants.get(assistant_id),
        client.assistants.search(metadata={"team": "blue"}),
        client.assistants.get_versions(assistant_id),
        client.assistants.update(assistant_id, metadata={"team": "blue", "token": "tok-run-real"}),
        client.assistants.set_latest(assistant_id, 1),
    ):
        _no_secret(shown)
    thread = client.threads.create()
    values = client.runs.wait(thread["thread_id"], assistant_id, input={"question": "?"})
    assert isinstance(values, dict)
    assert values["told"]["api_key"] == "sk-assistant-real"  # the real one
    assert values["context"]["db_password"] == "pw-context-real"
    assert values["context"]["nested"] == [{"access_token": "tok-nested-real"}]


def test_run_config_context_and_metadata_are_masked_in_answers_and_webhooks(
    client: SyncLangGraphClient, receiver: WebhookReceiver, server: str
) -> None:
    thread = client.threads.create(metadata={"api_key": "sk-run-real", "topic": "t"})
    assert thread["metadata"] == {"api_key": MASK, "topic": "t"}
    thread_id = thread["thread_id"]
    run: dict[str, Any] = client.runs.create(  # type: ignore[assignment]
        thread_id,
        "tell",
        input={"question": "?"},
        # Its context mirrors `configurable` (as langgraph-api; both at once is a 400).
        config={
            "configurable": {
                "openai_api_key": "sk-run-real",
                "temperature": 0,
                "Token": "tok-run-real",
            }
        },
        metadata={"password": "pw-context-real"},
        webhook=receiver.url,
    )
    assert run["kwargs"]["config"]["configurable"]["openai_api_key"] == MASK
    assert run["kwargs"]["config"]["configurable"]["temperature"] == 0
    assert run["kwargs"]["context"] == {"openai_api_key": MASK, "temperature": 0, "Token": MASK}
    assert run["metadata"]["password"] == MASK
    client.runs.join(thread_id, run["run_id"])
    (hook,) = receiver.wait_for(1)
    assert hook["run_id"] == run["run_id"]
    assert hook["kwargs"]["config"]["configurable"]["openai_api_key"] == MASK
    assert hook["metadata"]["password"] == MASK
    _no_secret(hook, but=("values",))
    assert hook["values"]["told"]["openai_api_key"] == "sk-run-real"  # the graph's
    assert hook["values"]["context"] == {
        "openai_api_key": "sk-run-real",
        "temperature": 0,
        "Token": "tok-run-real",
    }
    for shown in (
        run,
        client.runs.get(thread_id, run["run_id"]),
        client.runs.list(thread_id),
        client.threads.get(thread_id),
        client.threads.search(metadata={"topic": "t"}),
        httpx.post(f"{server}/threads/{thread_id}/copy", timeout=60).json(),
    ):
        _no_secret(shown, but=("values",))
    state: dict[str, Any] = client.threads.get_state(thread_id)  # type: ignore[assignment]
    assert state["values"]["told"]["openai_api_key"] == "sk-run-real"
    _no_secret(state, but=("values",))
    history = client.threads.get_history(thread_id)
    # LangGraph copies a run's configurable values into each checkpoint's metadata.
    assert any((c["metadata"] or {}).get("openai_api_key") == MASK for c in history)
    for checkpoint in history:
        tasks = [{**task, "result": None} for task in checkpoint["tasks"]]  # the graph's output
        _no_secret({**checkpoint, "tasks": tasks}, but=("values",))
    with httpx.Client(base_url=server, timeout=60) as http:
        streamed = http.post(
            f"/threads/{thread_id}/runs/stream",
            json={
                "assistant_id": "tell",
                "input": {"question": "again"},
                "config": {"configurable": {"openai_api_key": "sk-run-real"}},
                "stream_mode": ["updates", "messages-tuple", "debug", "checkpoints", "events"],
            },
        )
        assert streamed.status_code == 200
        events = []
        for block in streamed.text.replace("\r\n", "\n").split("\n\n"):
            event = next((ln[7:] for ln in block.splitlines() if ln.startswith("event: ")), "")
            data = "".join(ln[6:] for ln in block.splitlines() if ln.startswith("data: "))
            events.append(event)
            if not data or event in ("updates", "values"):
                continue  # the graph's own output may repeat what it was told
            shown = json.loads(data)
            if event == "debug" and shown["type"] == "checkpoint":
                _no_secret(shown["payload"], but=("values", "tasks"))
            elif event == "checkpoints":
                _no_secret(shown, but=("values", "tasks"))
            elif event == "events":
                _no_secret(shown, but=("data",))  # the graph's input and output
            elif event != "debug":  # debug task results are the graph's output
                _no_secret(shown)
        assert {"debug", "checkpoints", "events"} <= set(events), events


def test_cron_payloads_are_masked(client: SyncLangGraphClient) -> None:
    # Its runs' `configurable` and context (one of them: both is a 400, as on a run).
    crons: list[dict[str, Any]] = [
        client.crons.create(  # type: ignore[misc]
            "tell",
            schedule="0 0 1 1 *",
            input={"question": "yearly"},
            metadata={"secret": "pw-context-real"},
            **given,
        )
        for given in (
            {"config": {"configurable": {"api_key": "sk-run-real"}}},
            {"context": {"refresh_token": "tok-run-real"}},
        )
    ]
    _no_secret(crons)
    assert crons[0]["payload"]["config"]["configurable"]["api_key"] == MASK
    assert crons[1]["payload"]["context"]["refresh_token"] == MASK
    found = client.crons.search(assistant_id=crons[0]["assistant_id"])
    assert sorted(c["cron_id"] for c in found) == sorted(c["cron_id"] for c in crons)
    _no_secret(found)


def test_chat_api_agents_show_their_config_and_metadata_masked(server: str) -> None:
    with httpx.Client(base_url=server, timeout=60) as http:
        created = http.post(
            "/agents",
            json={
                "name": "keyed",
                "graph_id": "tell",
                "config": {"search_api_key": "sk-run-real", "depth": 2},
                "metadata": {"webhook_secret": "pw-context-real", "team": "red"},
            },
        )
        assert created.status_code == 201, created.text
        agent = created.json()
        assert agent["config"] == {"search_api_key": MASK, "depth": 2}
        assert agent["metadata"]["webhook_secret"] == MASK
        for shown in (agent, http.get(f"/agents/{agent['id']}").json(), http.get("/agents").json()):
            _no_secret(shown)
