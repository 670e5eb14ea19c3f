"""A /chat turn's checkpoints (server/chat_api/turns.py): the conversation's latest checkpoint is
read in the round trip that writes the turn (`begin_turn(read_latest=True)`) and is what
LangGraph's saver reads; the turn's last checkpoint writes commit with its finish, unless the
turn prunes the conversation's checkpoints first (`RunRecorder.reads_checkpoints`)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from stores.checkpoints import TimedSaver
from tests.integration.chat_support import stream_chat
from tests.integration.helpers import create_agent, create_conversation, create_user
from tests.support import make_settings, running_server

PRUNE_EVERY = 2


@pytest.fixture(scope="module")
def server_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """A server that prunes a conversation's checkpoints every second turn and sends a run's
    checkpoint writes only when it ends (no timer flush mid-turn)."""
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        checkpoint_prune_every=PRUNE_EVERY,
        checkpoint_flush_s=30,
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture
def conversation(api: httpx.Client) -> str:
    user = create_user(api)["id"]
    agent = create_agent(api, config={"memory_policy": "off"})["id"]
    conversation_id: str = create_conversation(api, user, agent)["id"]
    return conversation_id


@pytest.fixture
def first_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[Any, Any, int]]]:
    """For each run's first read of its thread's latest checkpoint (the server runs in a thread
    of this process): what the run got, what LangGraph's saver reads at that moment, and how
    many reads of it the run sent to PostgreSQL, by thread id."""
    seen: dict[str, list[tuple[Any, Any, int]]] = {}
    read = TimedSaver.aget_tuple
    fresh = AsyncPostgresSaver.aget_tuple
    sent = [0]

    async def counting(self: Any, config: Any) -> Any:
        sent[0] += 1
        return await fresh(self, config)

    async def recording(self: TimedSaver, config: Any) -> CheckpointTuple | None:
        configurable = config["configurable"]
        if configurable.get("checkpoint_id") or configurable.get("checkpoint_ns"):
            return await read(self, config)
        writes = self.pending.get(str(configurable["thread_id"]))
        if writes is None or writes.head is not None or writes.closed:
            return await read(self, config)
        sent[0] = 0
        got = await read(self, config)
        reads = sent[0]
        truth = await fresh(self, config)  # a read of PostgreSQL now, by LangGraph's saver
        # A copy: the run changes the checkpoint it got (its channel versions, as it goes).
        kept = copy.deepcopy(got)
        seen.setdefault(str(configurable["thread_id"]), []).append((kept, truth, reads))
        return got

    monkeypatch.setattr(AsyncPostgresSaver, "aget_tuple", counting)
    monkeypatch.setattr(TimedSaver, "aget_tuple", recording)
    return seen


def turn(api: httpx.Client, conversation_id: str, message: str) -> dict[str, Any]:
    events = stream_chat(api, {"conversation_id": conversation_id, "message": message})
    event, data = events[-1]
    assert event == "end", events
    assert data["status"] == "success", events
    return dict(events[-2][1])


def test_a_turn_starts_from_the_checkpoint_read_with_its_run_and_it_is_the_savers_read(
    api: httpx.Client, conversation: str, first_reads: dict[str, list[tuple[Any, Any, int]]]
) -> None:
    for i in range(3):
        turn(api, conversation, f"What is {i} + 1?")
    reads = first_reads[conversation]
    assert len(reads) == 3
    (got, truth, sent), *later = reads
    assert got is None  # a new conversation: nothing to read
    assert truth is None
    assert sent == 0
    for got, truth, sent in later:
        assert sent == 0  # read with the turn's run, in the round trip that wrote it
        assert got is not None
        assert truth is not None
        assert got.config == truth.config
        assert got.checkpoint == truth.checkpoint
        assert got.metadata == truth.metadata
        assert got.parent_config == truth.parent_config
        assert got.pending_writes == truth.pending_writes
    assert "What is 1 + 1?" in str(later[-1][0].checkpoint["channel_values"]["messages"])


def test_a_turn_after_the_state_was_changed_elsewhere_starts_from_that_state(
    api: httpx.Client, conversation: str, first_reads: dict[str, list[tuple[Any, Any, int]]]
) -> None:
    turn(api, conversation, "What is 2 + 2?")
    # Another writer (the Agent Server API, as a client in any process would) moves the
    # conversation's state on between turns.
    marker = f"note {uuid.uuid4().hex[:8]}"
    update = {"values": {"summary": marker}, "as_node": "remember"}
    response = api.post(f"/threads/{conversation}/state", json=update)
    assert response.status_code == 200, response.text
    turn(api, conversation, "And 3 + 3?")
    got, truth, sent = first_reads[conversation][-1]
    assert sent == 0
    assert got.checkpoint == truth.checkpoint
    assert got.config == truth.config
    assert got.checkpoint["channel_values"]["summary"] == marker


def _xmins(database_url: str, conversation_id: str) -> tuple[str, str]:
    """The transaction ids that wrote the conversation's latest checkpoint and its last answer
    (the turn's finish writes the answer)."""
    with psycopg.connect(database_url) as conn:
        checkpoint = conn.execute(
            "SELECT xmin::text FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = ''"
            " ORDER BY checkpoint_id DESC LIMIT 1",
            (conversation_id,),
        ).fetchone()
        answer = conn.execute(
            "SELECT xmin::text FROM messages WHERE conversation_id = %s AND sender = 'agent'"
            " ORDER BY seq DESC LIMIT 1",
            (uuid.UUID(conversation_id),),
        ).fetchone()
    assert checkpoint is not None
    assert answer is not None
    return str(checkpoint[0]), str(answer[0])


def test_a_chat_turns_last_checkpoint_writes_commit_with_its_finish_unless_it_prunes(
    api: httpx.Client, conversation: str, database_url: str
) -> None:
    turn(api, conversation, "What is 4 + 4?")  # turn 1: no prune
    checkpoint, answer = _xmins(database_url, conversation)
    assert checkpoint == answer  # one transaction: the finish's
    turn(api, conversation, "What is 5 + 5?")  # turn 2: pruned first, so stored before
    checkpoint, answer = _xmins(database_url, conversation)
    assert checkpoint != answer
    with psycopg.connect(database_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM checkpoints WHERE thread_id = %s", (conversation,)
        ).fetchone()
    assert count == (1,)  # the prune kept the turn's last checkpoint
    again = turn(api, conversation, "What did I ask before?")  # turn 3: from that checkpoint
    assert "What is 5 + 5?" in str(again["content"])
