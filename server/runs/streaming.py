"""Translate a graph execution into the Agent Server API's stream events, one per stream mode."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

import orjson
from langchain_core.messages import BaseMessage, BaseMessageChunk, message_chunk_to_message
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import Send, StreamMode

from server.redact import mask_secrets

ApiStreamMode = Literal[
    "values",
    "updates",
    "messages",
    "messages-tuple",
    "events",
    "debug",
    "custom",
    "checkpoints",
    "tasks",
]
"""The stream modes a client may ask for (langgraph-sdk's `StreamMode`)."""

STREAM_MODES: Final[frozenset[str]] = frozenset(get_args(ApiStreamMode))
ThreadStreamMode = Literal["lifecycle", "run_modes", "state_update"]
"""What a thread's stream may carry (langgraph-api's `ThreadStreamMode`): each run's start and
end (`lifecycle`), every event of its runs (`run_modes`), and state updates (`state_update`)."""
THREAD_STREAM_MODES: Final[frozenset[str]] = frozenset(get_args(ThreadStreamMode))
TERMINAL_EVENTS: Final[frozenset[str]] = frozenset({"end", "error"})
_JSON_OPTIONS: Final[int] = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(obj: Any) -> Any:
    """Encode what orjson does not know, the way langgraph-api does (unknown objects → null)."""
    if isinstance(obj, Send):
        return {"node": obj.node, "args": obj.arg}
    if hasattr(obj, "model_dump") and callable(obj.model_dump) and not isinstance(obj, type):
        return obj.model_dump()
    if hasattr(obj, "dict") and callable(obj.dict) and not isinstance(obj, type):
        return obj.dict()
    if hasattr(obj, "_asdict") and callable(obj._asdict) and not isinstance(obj, type):
        return obj._asdict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, BaseException):
        return {"error": type(obj).__name__, "message": str(obj)}
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, Decimal):
        return float(obj) if obj.as_tuple().exponent != 0 else int(obj)  # type: ignore[operator]
    if isinstance(obj, uuid.UUID | Path | Enum):
        return str(obj.value) if isinstance(obj, Enum) else str(obj)
    if isinstance(obj, datetime | date | time):
        return obj.isoformat()
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", errors="replace")
    return None


def dumps(obj: Any) -> bytes:
    """JSON bytes of `obj` (messages, Send, Command, Interrupt ...); NUL becomes U+FFFD.

    PostgreSQL's JSONB refuses `\\u0000`, and a replaced NUL cannot shift a key onto another.
    """
    try:
        dumped = orjson.dumps(obj, default=_default, option=_JSON_OPTIONS)
    except TypeError as error:
        if "surrogates" not in str(error):
            raise
        dumped = orjson.dumps(_scrub(obj), default=_default, option=_JSON_OPTIONS)
    if b"\\u0000" not in dumped:
        return dumped
    return dumped.replace(b"\\\\u0000", b"\\\\ufffd").replace(b"\\u0000", b"\\ufffd")


def _scrub(obj: Any) -> Any:
    if isinstance(obj, str):
        return obj.encode("utf-8", errors="replace").decode("utf-8")
    if isinstance(obj, Mapping):
        return {_scrub(k): _scrub(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_scrub(v) for v in obj]
    return obj


def to_jsonable(obj: Any) -> Any:
    """`obj` as plain JSON values (dicts, lists, strings, numbers, booleans, None)."""
    return orjson.loads(dumps(obj))


def error_data(error: BaseException) -> dict[str, str]:
    """The data of an `error` event: the exception's type and message (without NULs, which
    PostgreSQL cannot store as text or JSONB)."""
    return {"error": type(error).__name__, "message": str(error).replace("\x00", "")}


def validate_stream_modes(modes: str | Sequence[str] | None) -> list[str]:
    """The requested modes as a de-duplicated list (default `["values"]`).

    Raises `ValueError` naming the unknown mode.
    """
    if modes is None:
        return ["values"]
    wanted = [modes] if isinstance(modes, str) else list(modes)
    unknown = [m for m in wanted if m not in STREAM_MODES]
    if unknown:
        raise ValueError(
            f"stream_mode {unknown[0]!r} is not one of {sorted(STREAM_MODES)}",
        )
    return list(dict.fromkeys(wanted)) or ["values"]


def validate_thread_stream_modes(values: Sequence[str]) -> list[str]:
    """The thread stream modes asked for, each value a mode or a comma-separated list of them
    (langgraph-api reads `stream_modes=a,b`; the SDKs send `stream_mode=a&stream_mode=b`);
    `["run_modes"]` when none.

    Raises `ValueError` naming the unknown mode.
    """
    modes = [mode.strip() for value in values for mode in value.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in THREAD_STREAM_MODES]
    if unknown:
        raise ValueError(
            f"thread stream mode {unknown[0]!r} is not one of {sorted(THREAD_STREAM_MODES)}"
        )
    return list(dict.fromkeys(modes)) or ["run_modes"]


def _graph_modes(modes: Sequence[str]) -> list[StreamMode]:
    graph_modes: list[StreamMode] = []
    for mode in modes:
        if mode == "events":
            continue
        name = cast(StreamMode, "messages" if mode == "messages-tuple" else mode)
        if name not in graph_modes:
            graph_modes.append(name)
    # `events` alone still needs one graph mode to drive the run; its chunks are not sent.
    return graph_modes or ["values"]


def _name(mode: str, ns: Sequence[str] | None) -> str:
    return f"{mode}|{'|'.join(ns)}" if ns else mode


def _checkpoint_of(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A debug event's checkpoint as langgraph-api sends it: `checkpoint_map` only when there
    is one (never `null`)."""
    if not config:
        return None
    configurable = config.get("configurable") or {}
    checkpoint = {
        "thread_id": configurable.get("thread_id"),
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "checkpoint_id": configurable.get("checkpoint_id"),
    }
    if configurable.get("checkpoint_map"):
        checkpoint["checkpoint_map"] = configurable["checkpoint_map"]
    return checkpoint


_RUN_CONFIG_KEYS: Final[frozenset[str]] = frozenset({"config", "parent_config", "metadata"})


def _masked_checkpoint(payload: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint event with the secret-looking values of its configs and metadata masked
    (LangGraph copies a run's configurable values into both); its values are the graph's."""
    return {k: mask_secrets(v) if k in _RUN_CONFIG_KEYS else v for k, v in payload.items()}


def _debug(chunk: Any) -> Any:
    """Debug checkpoints carry `checkpoint`/`parent_checkpoint` like langgraph-api's."""
    if not isinstance(chunk, dict) or chunk.get("type") != "checkpoint":
        return chunk
    payload = chunk.get("payload")
    if not isinstance(payload, dict):
        return chunk
    payload = _masked_checkpoint(payload)
    tasks = []
    for task in payload.get("tasks", []):
        state = task.get("state") if isinstance(task, dict) else None
        if isinstance(state, dict) and state.get("configurable"):
            task = {k: v for k, v in task.items() if k != "state"}
            task["checkpoint"] = state["configurable"]
        tasks.append(task)
    return {
        **chunk,
        "payload": {
            **payload,
            "checkpoint": _checkpoint_of(payload.get("config")),
            "parent_checkpoint": _checkpoint_of(payload.get("parent_config")),
            "tasks": tasks,
        },
    }


class _Translator:
    """Turns `(ns, graph mode, chunk)` into API events for the requested modes."""

    def __init__(self, modes: Sequence[str]) -> None:
        self.modes = set(modes)
        self.legacy_messages = "messages" in self.modes
        self.message_tuples = "messages-tuple" in self.modes
        self.messages: dict[str, BaseMessage] = {}

    def translate(self, ns: Sequence[str] | None, mode: str, chunk: Any) -> list[tuple[str, Any]]:
        if mode == "messages":
            return self._message(ns, chunk)
        if mode not in self.modes:
            return []
        if mode == "debug":
            chunk = _debug(chunk)
        elif mode == "checkpoints" and isinstance(chunk, dict):
            chunk = _masked_checkpoint(chunk)
        return [(_name(mode, ns), to_jsonable(chunk))]

    def _message(self, ns: Sequence[str] | None, chunk: Any) -> list[tuple[str, Any]]:
        message, metadata = chunk
        metadata = mask_secrets(metadata)  # it holds the run's configurable values
        if self.message_tuples:
            return [(_name("messages", ns), to_jsonable([message, metadata]))]
        if not self.legacy_messages or not isinstance(message, BaseMessage):
            return []
        out: list[tuple[str, Any]] = []
        key = message.id or str(uuid.uuid4())
        seen = self.messages.get(key)
        if seen is None:
            self.messages[key] = message
            out.append(("messages/metadata", to_jsonable({key: {"metadata": metadata}})))
        else:
            merged = seen + message if isinstance(seen, BaseMessageChunk) else message
            self.messages[key] = merged
        whole = self.messages[key]
        if isinstance(message, BaseMessageChunk):
            shown = (
                message_chunk_to_message(whole) if isinstance(whole, BaseMessageChunk) else whole
            )
            out.append(("messages/partial", to_jsonable([shown])))
        else:
            out.append(("messages/complete", to_jsonable([whole])))
        return out


async def stream_graph(
    graph: Pregel[Any, Any, Any, Any],
    input: Any,
    *,
    config: RunnableConfig,
    context: Any = None,
    stream_modes: Sequence[str] = ("values",),
    subgraphs: bool = False,
    interrupt_before: Sequence[str] | Literal["*"] | None = None,
    interrupt_after: Sequence[str] | Literal["*"] | None = None,
    checkpoint_during: bool | None = None,
    durability: Literal["sync", "async", "exit"] | None = None,
) -> AsyncIterator[tuple[str, Any]]:
    """Run `graph` on `input` and yield `(event, data)` for each requested stream mode.

    `data` is plain JSON. Subgraph events (with `subgraphs=True`) are named `mode|ns...`;
    `messages-tuple` is sent as `messages` with `[message, metadata]`; legacy `messages`
    as `messages/metadata`, `messages/partial`, `messages/complete`; `events` are
    `astream_events(version="v2")` events. `metadata`, `end` and `error` are the caller's.
    `durability` (sync/async/exit) wins over the older `checkpoint_during` (True: async,
    False: exit). Exceptions of the graph propagate.
    """
    modes = validate_stream_modes(stream_modes)
    graph_modes = _graph_modes(modes)
    translator = _Translator(modes)
    kwargs: dict[str, Any] = {
        "context": context,
        "stream_mode": graph_modes,
        "subgraphs": subgraphs,
        "interrupt_before": interrupt_before,
        "interrupt_after": interrupt_after,
    }
    if durability is not None:
        kwargs["durability"] = durability
    elif checkpoint_during is not None:
        kwargs["durability"] = "async" if checkpoint_during else "exit"
    if "events" not in modes:
        stream = cast(AsyncGenerator[Any, None], graph.astream(input, config, **kwargs))
        async with aclosing(stream):
            async for item in stream:
                ns, mode, chunk = _unpack(item, subgraphs=subgraphs)
                for pair in translator.translate(ns, mode, chunk):
                    yield pair
        return
    run_id = config.get("run_id") or uuid.uuid4()
    config = {**config, "run_id": run_id}
    events = cast(
        AsyncGenerator[Any, None],
        graph.astream_events(input, config, version="v2", **kwargs),
    )
    async with aclosing(events):
        async for raw in events:
            event = cast(dict[str, Any], raw)
            if "langsmith:hidden" in (event.get("tags") or ()):
                continue
            if event.get("event") == "on_chain_stream" and str(event.get("run_id")) == str(run_id):
                ns, mode, chunk = _unpack(event["data"]["chunk"], subgraphs=subgraphs)
                for item in translator.translate(ns, mode, chunk):
                    yield item
                continue
            if isinstance(event.get("metadata"), Mapping):  # the run's configurable values
                event = {**event, "metadata": mask_secrets(event["metadata"])}
            yield "events", to_jsonable(event)


def _unpack(item: Any, *, subgraphs: bool) -> tuple[tuple[str, ...] | None, str, Any]:
    if subgraphs:
        ns, mode, chunk = item
        return tuple(ns), str(mode), chunk
    mode, chunk = item
    return None, str(mode), chunk
