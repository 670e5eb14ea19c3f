"""Background loops: a failing sweep or loop is logged and tried again; none stops by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from server.background import supervise, sweep_forever


async def test_a_failing_sweep_is_logged_and_the_loop_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    done = asyncio.Event()

    async def sweep() -> str | None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database went away")
        if len(calls) >= 3:
            done.set()
        return "2 expired threads deleted"

    with caplog.at_level(logging.INFO):
        task = asyncio.create_task(sweep_forever("thread TTL sweep", 0.01, sweep))
        try:
            await asyncio.wait_for(done.wait(), timeout=30)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert "thread TTL sweep failed (next try in 0 s): ConnectionError: database went" in (
        caplog.text
    )
    assert "thread TTL sweep: 2 expired threads deleted" in caplog.text
    assert task.cancelled()


async def test_a_loop_that_raises_is_logged_and_restarted_until_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    async def listener() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise OSError("connection to PostgreSQL lost")

    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(supervise("run listener", listener, pause_s=0.01), timeout=30)
    assert len(runs) == 3
    assert caplog.text.count("run listener stopped on an error; restarting it") == 2


async def test_a_supervised_loop_stops_when_cancelled() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervise("worker", forever))
    await asyncio.wait_for(started.wait(), timeout=30)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
