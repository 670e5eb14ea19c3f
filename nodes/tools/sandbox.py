"""Worker processes for the tools that compute: off the event loop, killed at their time limit,
within a memory limit. `python -m nodes.tools.sandbox` is one worker.

A worker reads one JSON request per line on stdin (`{"fn": "module:function", "args": {...}}`)
and writes one JSON reply per line (`{"ok": "..."}` or `{"error": "...", "tool": true}`). It
imports only the (light, pure) modules of the functions it is asked to run. The pool keeps up
to `processes` workers, started on first use; a call over its time limit, or whose worker dies
or answers too much, loses its worker (killed, replaced on the next call).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from nodes.tools.errors import ToolError

log = logging.getLogger(__name__)

_REPLY_SLACK = 64 * 1024  # room for the JSON around a reply of `max_output_chars`


class _Worker:
    """One worker process and its pipes."""

    def __init__(
        self, transport: asyncio.SubprocessTransport, process: asyncio.subprocess.Process
    ) -> None:
        self.transport = transport
        self.process = process

    async def call(self, fn: str, args: Mapping[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps({"fn": fn, "args": dict(args)}).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise ToolError("the tool's worker process ended without answering")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def kill(self) -> None:
        """Kill the process and close its pipes (even those with unread output)."""
        self.transport.close()


class ComputePool:
    """Runs `compute` tools in worker processes, `processes` at a time."""

    def __init__(self, *, processes: int, memory_mb: int, max_output_chars: int) -> None:
        self.processes = processes
        self.memory_mb = memory_mb
        self.max_output_chars = max_output_chars
        self._idle: list[_Worker] = []
        self._slots = asyncio.Semaphore(processes)
        self._all: set[_Worker] = set()
        self._closed = False

    async def _spawn(self) -> _Worker:
        loop = asyncio.get_running_loop()
        limit = self.max_output_chars * 6 + _REPLY_SLACK  # a JSON escape is at most 6 bytes
        transport, protocol = await loop.subprocess_exec(
            lambda: asyncio.subprocess.SubprocessStreamProtocol(limit=limit, loop=loop),
            sys.executable,
            "-m",
            "nodes.tools.sandbox",
            str(self.memory_mb),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = _Worker(transport, asyncio.subprocess.Process(transport, protocol, loop))
        self._all.add(worker)
        return worker

    async def run(self, fn: str, args: Mapping[str, Any], *, timeout_s: float) -> str:
        """`fn(args)` in a worker: its result; `ToolError` for what the tool refused, for a
        call over `timeout_s` (its worker is killed) and for a worker that failed."""
        if self._closed:
            raise ToolError("the server is shutting down")
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._spawn()
            try:
                reply = await asyncio.wait_for(worker.call(fn, args), timeout_s)
            except BaseException as error:
                worker.kill()  # over time, cancelled, or broken: never reused
                self._all.discard(worker)
                await _reap(worker)
                if isinstance(error, TimeoutError):
                    raise ToolError(f"the tool was stopped after {timeout_s:g} s") from None
                if isinstance(error, json.JSONDecodeError):
                    raise ToolError("the tool's worker process answered garbage") from None
                if isinstance(error, ValueError | asyncio.LimitOverrunError):
                    raise ToolError("the tool's answer was too large") from None
                raise
            self._idle.append(worker)
        if "ok" in reply:
            return str(reply["ok"])
        if reply.get("tool"):
            raise ToolError(str(reply.get("error", "the tool failed")))
        raise ToolError(f"the tool failed: {reply.get('error', 'unknown error')}")

    async def aclose(self) -> None:
        """Stop every worker."""
        self._closed = True
        for worker in list(self._all):
            worker.kill()
            await _reap(worker)
        self._all.clear()
        self._idle.clear()


async def _reap(worker: _Worker) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(worker.process.wait(), 5)
    worker.transport.close()


@contextlib.asynccontextmanager
async def open_compute_pool(
    *, processes: int, memory_mb: int, max_output_chars: int
) -> AsyncIterator[ComputePool]:
    """A `ComputePool` for the lifespan; its workers are stopped on exit."""
    pool = ComputePool(processes=processes, memory_mb=memory_mb, max_output_chars=max_output_chars)
    try:
        yield pool
    finally:
        await pool.aclose()


# -- the worker side ------------------------------------------------------------------------


def _function(spec: str, cache: dict[str, Callable[[Mapping[str, Any]], str]]) -> Any:
    if spec not in cache:
        module, _, name = spec.partition(":")
        cache[spec] = getattr(importlib.import_module(module), name)
    return cache[spec]


def _serve(memory_mb: int) -> None:
    """Answer requests on stdin until it closes, within `memory_mb` of address space."""
    import resource  # POSIX only, and only in the worker

    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    functions: dict[str, Callable[[Mapping[str, Any]], str]] = {}
    for line in sys.stdin:
        reply: dict[str, Any]
        try:
            request = json.loads(line)
            reply = {"ok": str(_function(request["fn"], functions)(request["args"]))}
        except ToolError as error:
            reply = {"error": str(error), "tool": True}
        except MemoryError:
            reply = {"error": "the tool ran out of memory", "tool": True}
        except Exception as error:  # reported to the model, never crashes the worker
            reply = {"error": f"{type(error).__name__}: {error}", "tool": False}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
