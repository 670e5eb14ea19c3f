"""The transcript of a /chat turn, written from its run's results by whichever process finishes
the run (a turn resumed after a crash keeps its tool calls): tool rows, then the answer."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodes.retrieve import public_source
from server.runs.execute import FinishRecord, RecorderFactory, RunRecorder, RunResult
from stores.checkpoints import Checkpoints
from stores.sql import turns
from stores.sql.models import Run
from stores.sql.runs import RunToken

log = logging.getLogger(__name__)

SOURCE = "chat"
"""`metadata.source` of the runs of /chat turns."""

CALL_FIELDS = ("id", "name", "args", "status")
"""What the answer's metadata keeps of each tool call (its tool row has the rest)."""


def tool_rows(run_id: uuid.UUID, records: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One `tool` message per tool call of the turn, with what it returned."""
    return [
        {
            "sender": "tool",
            "content": record["content"],
            "metadata": {
                "run_id": str(run_id),
                "tool": record["name"],
                "tool_call_id": record["id"],
                "args": record["args"],
                "status": record["status"],
                "latency_ms": record["latency_ms"],
                "cached": record["cached"],
            },
        }
        for record in records
    ]


@dataclass(slots=True)
class TranscriptRecorder:
    """Records one attempt of a /chat run: its first token, then its transcript rows."""

    run: Run
    checkpoints: Checkpoints
    prune_every: int
    first_token: float | None = None

    def on_event(self, event: str, data: Any) -> None:
        """Note when the first token of the answer was streamed."""
        is_token = event == "custom" and isinstance(data, dict) and data.get("event") == "token"
        if is_token and self.first_token is None:
            self.first_token = time.perf_counter()

    def reads_checkpoints(self, values: Mapping[str, Any]) -> bool:
        """Whether the finish of a successful turn ending with `values` prunes the
        conversation's checkpoints first (its last checkpoint writes are then stored before)."""
        return self._prunes(values, "success")

    def _prunes(self, values: Mapping[str, Any], status: str) -> bool:
        turn = int(values.get("turn", 0) or 0)
        return bool(self.prune_every) and status == "success" and turn % self.prune_every == 0

    async def on_finish(self, result: RunResult, token: RunToken) -> FinishRecord:
        """The turn's tool rows and (on success) its answer, written with the run's end; the
        `message` event. Every `prune_every` turns, first keep only the conversation's latest
        checkpoint."""
        await self._prune(result)
        run, values = self.run, result.values
        assert run.thread_id is not None
        records = [r for r in values.get("tool_calls", []) if isinstance(r, Mapping)]
        rows = tool_rows(run.id, records)
        answer: dict[str, Any] | None = None
        if result.status == "success":
            context = result.context
            model = f"{context.model.provider}:{context.model.name}" if context else "unknown"
            latency_ms = round((time.perf_counter() - result.started) * 1000, 2)
            first = self.first_token
            answer = {
                "content": str(values.get("answer", "")),
                "citations": [public_source(s) for s in values.get("citations", [])],
                "usage": dict(values.get("usage", {})),
                "model": model,
                "latency_ms": latency_ms,
            }
            metadata: dict[str, Any] = {
                "run_id": str(run.id),
                "model": model,
                "usage": answer["usage"],
                "latency_ms": latency_ms,
                "time_to_first_token_ms": (
                    round((first - result.started) * 1000, 2) if first is not None else None
                ),
                "tool_calls": [{k: r[k] for k in CALL_FIELDS} for r in records],
                "citations": answer["citations"],
                "plan": list(values.get("plan", [])),
                "warnings": list(values.get("warnings", [])),
            }
            if run.attempt > 1:
                metadata["recovered"] = True  # finished by an attempt after a crash
            rows.append({"sender": "agent", "content": answer["content"], "metadata": metadata})
        ids, write = turns.transcript_write(token, run.thread_id, rows, status=result.status)
        writes = (write,) if write is not None else ()
        if answer is None:
            return FinishRecord(writes=writes)
        message = {"id": str(ids[-1]), **answer}
        return FinishRecord(
            writes=writes, events=(("custom", {"event": "message", "data": message}),)
        )

    async def _prune(self, result: RunResult) -> None:
        """Keep only the conversation's latest checkpoint every `prune_every` turns (its run's
        are stored by now); housekeeping: a failure is logged, the turn goes on."""
        if self._prunes(result.values, result.status):
            assert self.run.thread_id is not None
            try:
                await self.checkpoints.prune(str(self.run.thread_id))
            except Exception:
                log.exception("run %s: pruning old checkpoints failed", self.run.id)


def transcript_recorder(*, checkpoints: Checkpoints, prune_every: int) -> RecorderFactory:
    """What the engine calls for each attempt of a /chat run."""

    def make(run: Run) -> RunRecorder:
        return TranscriptRecorder(run=run, checkpoints=checkpoints, prune_every=prune_every)

    return make
