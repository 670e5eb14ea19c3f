"""Thread state from the checkpointer: snapshots as the SDK shows them, history, update, copy."""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, cast

from fastapi import Response
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import InvalidUpdateError
from langgraph.types import Interrupt, StateSnapshot, StateUpdate
from pydantic import BaseModel, TypeAdapter, create_model

from server.config import Graph
from server.redact import mask_secrets
from server.runs.streaming import to_jsonable
from stores.errors import InvalidInputError, NotFoundError

T = TypeVar("T")


def set_pagination_headers(response: Response, *, offset: int, count: int, more: bool) -> None:
    """`X-Pagination-Total` and (when more follow) `X-Pagination-Next`, as langgraph-api sends."""
    if more:
        response.headers["X-Pagination-Next"] = str(offset + count)
        response.headers["X-Pagination-Total"] = str(offset + count + 1)
    else:
        response.headers["X-Pagination-Total"] = str(offset + count)


def search_page(
    response: Response,
    rows: Sequence[T],
    *,
    more: bool,
    offset: int,
    to_json: Callable[[T], dict[str, Any]],
    select: Sequence[str] | None,
    added: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """A search's rows as JSON (only the `select`ed fields, then what `added` makes of each
    whole item: a thread search's `extracted`), with the pagination headers set."""
    set_pagination_headers(response, offset=offset, count=len(rows), more=more)
    items = []
    for row in rows:
        whole = to_json(row)
        item = {k: v for k, v in whole.items() if k in select} if select else whole
        items.append(item if added is None else {**item, **added(whole)})
    return items


_PATH_STEP = re.compile(r"\.|\[")


def extract_path_value(data: Mapping[str, Any], path: str) -> Any:
    """The value at a dot/bracket `path` (`values.messages[-1].content`) of a thread's JSON,
    or None where it does not resolve: langgraph-api's `extract` of a thread search."""
    root, *steps = _PATH_STEP.split(path)
    current: Any = data.get(root)
    for step in steps:
        if current is None:
            return None
        if not step:
            continue
        if step.endswith("]"):
            try:
                index = int(step[:-1])
            except ValueError:
                return None
            if not isinstance(current, list) or not -len(current) <= index < len(current):
                return None
            current = current[index]
        elif isinstance(current, Mapping):
            current = current.get(step)
        else:
            return None
    return current


def thread_config(
    thread_id: uuid.UUID,
    *,
    checkpoint_id: str | None = None,
    checkpoint_ns: str = "",
    checkpoint_map: Mapping[str, Any] | None = None,
) -> RunnableConfig:
    """The config that addresses a thread (and optionally one of its checkpoints)."""
    configurable: dict[str, Any] = {"thread_id": str(thread_id), "checkpoint_ns": checkpoint_ns}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    if checkpoint_map:
        configurable["checkpoint_map"] = dict(checkpoint_map)
    return {"configurable": configurable}


def checkpoint_of(config: RunnableConfig | None) -> dict[str, Any] | None:
    """The SDK's `Checkpoint` for a state config (None without a checkpoint id), as
    langgraph-api shows it: `checkpoint_map` only when there is one."""
    configurable = (config or {}).get("configurable") or {}
    if not configurable.get("checkpoint_id") or not configurable.get("thread_id"):
        return None
    checkpoint: dict[str, Any] = {
        "thread_id": str(configurable["thread_id"]),
        "checkpoint_ns": configurable.get("checkpoint_ns") or "",
        "checkpoint_id": configurable["checkpoint_id"],
    }
    if configurable.get("checkpoint_map"):
        checkpoint["checkpoint_map"] = configurable["checkpoint_map"]
    return checkpoint


def interrupt_json(interrupt: Interrupt) -> dict[str, Any]:
    """An interrupt as the SDK shows it: its id and value."""
    return {"id": interrupt.id, "value": to_jsonable(interrupt.value)}


def snapshot_json(state: StateSnapshot) -> dict[str, Any]:
    """A `StateSnapshot` as the SDK's `ThreadState` (subgraph states nested in tasks)."""
    checkpoint = checkpoint_of(state.config)
    parent = checkpoint_of(state.parent_config)
    return {
        "values": to_jsonable(state.values),
        "next": list(state.next),
        "tasks": [
            {
                "id": task.id,
                "name": task.name,
                "path": to_jsonable(list(task.path)),
                "error": str(task.error) if task.error is not None else None,
                "interrupts": [interrupt_json(i) for i in task.interrupts],
                "checkpoint": (
                    to_jsonable(task.state.get("configurable"))
                    if task.state is not None and not isinstance(task.state, StateSnapshot)
                    else None
                ),
                "state": snapshot_json(task.state)
                if isinstance(task.state, StateSnapshot)
                else None,
                "result": to_jsonable(task.result) if task.result is not None else None,
            }
            for task in state.tasks
        ],
        "metadata": mask_secrets(to_jsonable(state.metadata or {})),
        "created_at": state.created_at,
        "checkpoint": checkpoint,
        "parent_checkpoint": parent,
        "interrupts": [interrupt_json(i) for i in state.interrupts],
        "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
        "parent_checkpoint_id": parent["checkpoint_id"] if parent else None,
    }


def empty_state() -> dict[str, Any]:
    """The state of a thread without checkpoints yet, as langgraph-api shows it (no
    checkpoint: useStream reads `checkpoint == null` as "nothing to show")."""
    return {
        "values": {},
        "next": [],
        "tasks": [],
        "metadata": None,
        "created_at": None,
        "checkpoint": None,
        "parent_checkpoint": None,
        "interrupts": [],
        "checkpoint_id": None,
        "parent_checkpoint_id": None,
    }


def cached_state(state: StateSnapshot) -> tuple[dict[str, Any], dict[str, Any]]:
    """The values and interrupts (by task id) a thread row caches for a snapshot."""
    values = to_jsonable(state.values) if isinstance(state.values, Mapping) else {}
    interrupts = {
        task.id: [interrupt_json(i) for i in task.interrupts]
        for task in state.tasks
        if task.interrupts
    }
    return values, interrupts


async def read_state(
    graph: Graph,
    thread_id: uuid.UUID,
    *,
    checkpoint_id: str | None = None,
    checkpoint_ns: str = "",
    checkpoint_map: Mapping[str, Any] | None = None,
    subgraphs: bool = False,
) -> dict[str, Any]:
    """A thread's state (latest, or at a checkpoint) as the SDK's `ThreadState`.

    Raises:
        NotFoundError: `checkpoint_id` is not a checkpoint of the thread (field `checkpoint_id`).
    """
    config = thread_config(
        thread_id,
        checkpoint_id=checkpoint_id,
        checkpoint_ns=checkpoint_ns,
        checkpoint_map=checkpoint_map,
    )
    saver = graph.checkpointer
    known = (
        not checkpoint_id
        or not isinstance(saver, BaseCheckpointSaver)
        or await saver.aget_tuple(config) is not None
    )
    if not known:
        raise NotFoundError(
            f"checkpoint of thread {thread_id}", checkpoint_id, field="checkpoint_id"
        )
    state = await graph.aget_state(config, subgraphs=subgraphs)
    if state.config.get("configurable", {}).get("checkpoint_id") is None:
        return empty_state()
    return snapshot_json(state)


async def history(
    graph: Graph,
    thread_id: uuid.UUID,
    *,
    limit: int,
    before: str | None,
    metadata: Mapping[str, Any] | None,
    checkpoint_id: str | None,
    checkpoint_ns: str,
) -> list[dict[str, Any]]:
    """Past states of a thread, newest first."""
    config = thread_config(thread_id, checkpoint_id=checkpoint_id, checkpoint_ns=checkpoint_ns)
    before_config = thread_config(thread_id, checkpoint_id=before) if before else None
    states: list[dict[str, Any]] = []
    async for state in graph.aget_state_history(
        config, filter=dict(metadata) if metadata else None, before=before_config, limit=limit
    ):
        states.append(snapshot_json(state))
    return states


# Pseudo-nodes `update_state` also accepts: the input, a copy of the checkpoint, the end.
SPECIAL_NODES = frozenset({"__input__", "__copy__", "__end__"})


def _is_node(graph: Graph, name: str) -> bool:
    return name in graph.nodes or name in SPECIAL_NODES


async def update_state(
    graph: Graph,
    thread_id: uuid.UUID,
    *,
    values: Any,
    as_node: str | None,
    checkpoint_id: str | None,
    checkpoint_ns: str = "",
) -> tuple[dict[str, Any], StateSnapshot]:
    """Write `values` to a thread as if node `as_node` had returned them (a new checkpoint).

    Returns the SDK's `{"checkpoint": ...}` (with the deprecated `configurable` and
    `checkpoint_id` beside it, which langgraph-api still sends and older clients read) and the
    thread's latest state after the write.

    Raises:
        InvalidInputError: `as_node` is not a node of the graph, or the update is rejected.
    """
    if as_node is not None and not _is_node(graph, as_node):
        raise InvalidInputError(
            f"as_node {as_node!r} is not a node of the graph; nodes: {sorted(graph.nodes)}",
            field="as_node",
        )
    config = thread_config(thread_id, checkpoint_id=checkpoint_id, checkpoint_ns=checkpoint_ns)
    try:
        written = await graph.aupdate_state(config, values, as_node=as_node)
    except (InvalidUpdateError, ValueError, TypeError, KeyError) as error:
        raise InvalidInputError(
            f"the state update was rejected: {error}", field="values"
        ) from error
    latest = await graph.aget_state(thread_config(thread_id))
    checkpoint = checkpoint_of(written)
    answer = {
        "checkpoint": checkpoint,
        "configurable": dict(checkpoint) if checkpoint else None,
        "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
    }
    return answer, latest


async def apply_supersteps(
    graph: Graph, thread_id: uuid.UUID, supersteps: Sequence[Sequence[tuple[Any, str]]]
) -> StateSnapshot:
    """Seed a new thread with supersteps of `(values, as_node)` updates."""
    for superstep in supersteps:
        for _, as_node in superstep:
            if not _is_node(graph, as_node):
                raise InvalidInputError(
                    f"as_node {as_node!r} is not a node of the graph; nodes: {sorted(graph.nodes)}",
                    field="supersteps",
                )
    steps = [[StateUpdate(values, as_node) for values, as_node in step] for step in supersteps]
    try:
        await graph.abulk_update_state(thread_config(thread_id), steps)
    except (InvalidUpdateError, ValueError, TypeError, KeyError) as error:
        raise InvalidInputError(f"a superstep was rejected: {error}", field="supersteps") from error
    return await graph.aget_state(thread_config(thread_id))


async def copy_checkpoints(
    saver: BaseCheckpointSaver[Any], source: uuid.UUID, target: uuid.UUID
) -> int:
    """Copy every checkpoint (all namespaces) and pending write of `source` to `target`."""
    tuples = [t async for t in saver.alist({"configurable": {"thread_id": str(source)}})]
    for item in reversed(tuples):  # oldest first, so parents exist before children
        configurable = item.config["configurable"]
        parent_id = (item.parent_config or {}).get("configurable", {}).get("checkpoint_id")
        ns = configurable.get("checkpoint_ns", "")
        target_config = thread_config(target, checkpoint_id=parent_id, checkpoint_ns=ns)
        written = await saver.aput(
            target_config,
            item.checkpoint,
            item.metadata,
            dict(item.checkpoint["channel_versions"]),
        )
        by_task: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in item.pending_writes or []:
            by_task.setdefault(task_id, []).append((channel, value))
        for task_id, writes in by_task.items():
            await saver.aput_writes(written, writes, task_id)
    return len(tuples)


def jsonschema_of(make: Any) -> dict[str, Any] | None:
    """Call a schema method of a graph; None when the graph's types have no JSON schema."""
    try:
        return cast(dict[str, Any], make())
    except Exception:  # any type without a JSON schema means "no schema"
        return None


def _describable(update_type: Any) -> bool:
    try:
        TypeAdapter(update_type).json_schema()
    except Exception:  # pydantic cannot describe it: the field becomes `Any`
        return False
    return True


def _channels_schema(graph: Graph, channels: str | Sequence[str], title: str) -> dict[str, Any]:
    """A JSON schema built from the channels' update types (`Any` where a type has none)."""
    keys = [channels] if isinstance(channels, str) else list(channels)
    fields: dict[str, Any] = {}
    for key in keys:
        update_type = getattr(graph.channels[key], "UpdateType", Any)
        fields[key] = (update_type if _describable(update_type) else Any, None)
    model: type[BaseModel] = create_model(title, **fields)
    return model.model_json_schema()


def _schema_keys(graph: Graph, which: Literal["input", "output"]) -> list[str]:
    """The state keys of the graph's input or output schema."""
    builder = getattr(graph, "builder", None)
    if builder is None:  # a functional-API graph has no builder
        raise ValueError("the graph has no state schema")
    schema = builder.input_schema if which == "input" else builder.output_schema
    return list(builder.schemas[schema])


def graph_schemas(graph: Graph) -> dict[str, Any]:
    """Input, output, state, config and context JSON schemas of a graph (None if unavailable).

    Graphs whose state types pydantic cannot describe (e.g. `typing.TypedDict` on Python 3.11)
    fall back to a schema built channel by channel, as langgraph-api does for the state. Titles
    are LangChain's `get_name(suffix)`, as there: `counter_state` for a graph named `counter`,
    `LangGraphState` for `LangGraph`.
    """

    def config_schema() -> dict[str, Any]:
        with warnings.catch_warnings():  # deprecated in LangGraph 1.0, still what Studio reads
            warnings.simplefilter("ignore")
            schema = graph.get_config_jsonschema()
        configurable = schema.get("properties", {}).get("configurable")
        if isinstance(configurable, dict) and "$ref" in configurable:
            ref_name = configurable["$ref"].rsplit("/", 1)[-1]
            return cast(dict[str, Any], schema.get("$defs", {}).get(ref_name, {}))
        return cast(dict[str, Any], configurable or {})

    return {
        "input_schema": jsonschema_of(graph.get_input_jsonschema)
        or jsonschema_of(
            lambda: _channels_schema(graph, _schema_keys(graph, "input"), graph.get_name("Input"))
        ),
        "output_schema": jsonschema_of(graph.get_output_jsonschema)
        or jsonschema_of(
            lambda: _channels_schema(graph, _schema_keys(graph, "output"), graph.get_name("Output"))
        ),
        "state_schema": jsonschema_of(
            lambda: _channels_schema(graph, graph.stream_channels_list, graph.get_name("State"))
        ),
        "config_schema": jsonschema_of(config_schema),
        "context_schema": jsonschema_of(graph.get_context_jsonschema),
    }
