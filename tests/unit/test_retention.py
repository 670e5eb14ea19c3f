"""A retention sweep that fails is logged and tried again; the loop never stops by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from server.retention import sweep_forever


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
