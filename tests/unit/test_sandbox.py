"""Computing tools run in real worker processes: killed at their time limit, within a memory
limit, their answer size bounded; a failed worker is replaced."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from nodes.tools.errors import ToolError
from nodes.tools.sandbox import ComputePool, open_compute_pool

TARGETS = "tests.unit.sandbox_targets"


@pytest.fixture
async def pool() -> AsyncIterator[ComputePool]:
    async with open_compute_pool(processes=2, memory_mb=256, max_output_chars=10_000) as pool:
        yield pool


async def test_a_call_runs_in_another_process(pool: ComputePool) -> None:
    assert (
        await pool.run("nodes.tools.arithmetic:calculate", {"expression": "6*7"}, timeout_s=10)
        == "42"
    )
    assert await pool.run(f"{TARGETS}:echo", {"text": "hi"}, timeout_s=10) == "hi"
    assert await pool.run(f"{TARGETS}:pid", {}, timeout_s=10) != str(os.getpid())


async def test_a_refusal_reaches_the_caller_as_a_tool_error(pool: ComputePool) -> None:
    with pytest.raises(ToolError, match="no, because it is late"):
        await pool.run(f"{TARGETS}:refuse", {"why": "it is late"}, timeout_s=10)
    with pytest.raises(ToolError, match="more than 10000 bits"):
        await pool.run(
            "nodes.tools.arithmetic:calculate", {"expression": "((9^999)^999)^9"}, timeout_s=10
        )


async def test_a_call_over_its_time_limit_is_killed_and_the_next_one_works(
    pool: ComputePool,
) -> None:
    with pytest.raises(ToolError, match=r"stopped after 0\.5 s"):
        await pool.run(f"{TARGETS}:spin", {}, timeout_s=0.5)
    assert await pool.run(f"{TARGETS}:echo", {"text": "again"}, timeout_s=10) == "again"
    assert len(pool._all) == 1  # the spinning worker was killed, not kept


async def test_memory_beyond_the_limit_is_refused(pool: ComputePool) -> None:
    with pytest.raises(ToolError, match="out of memory"):
        await pool.run(f"{TARGETS}:hog", {"mb": 1024}, timeout_s=10)
    assert await pool.run(f"{TARGETS}:hog", {"mb": 8}, timeout_s=10) == str(8 * 1024 * 1024)


async def test_an_answer_too_large_loses_its_worker(pool: ComputePool) -> None:
    with pytest.raises(ToolError, match="too large"):
        await pool.run(f"{TARGETS}:shout", {"n": 5_000_000}, timeout_s=10)
    assert await pool.run(f"{TARGETS}:shout", {"n": 5}, timeout_s=10) == "xxxxx"
