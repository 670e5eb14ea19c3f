"""Full collections at quiet moments (server/gc_pauses.py): none while runs execute until one is
long overdue; one at the first quiet moment once due; the collector's thresholds restored."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from typing import Any

import pytest

from server import gc_pauses
from server.gc_pauses import LATEST, quiet_full_collections


@pytest.fixture
def full_collections() -> Iterator[list[float]]:
    """The monotonic times (the event loop's clock) at which full (generation 2) collections
    started: a collection may also start outside any running loop."""
    started: list[float] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            started.append(time.monotonic())

    thresholds = gc.get_threshold()
    gc.set_threshold(50, 2, 3)  # small, so that a little garbage makes them due
    gc.callbacks.append(record)
    try:
        yield started
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*thresholds)


def _garbage(cycles: int) -> None:
    for _ in range(cycles):
        a: list[Any] = []
        a.append(a)


async def test_full_collections_wait_for_a_quiet_moment(
    full_collections: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gc_pauses, "CHECK_S", 0.01)
    busy = True
    async with quiet_full_collections(lambda: not busy):
        assert gc.get_threshold()[2] > 10**6  # the collector starts none on its own
        gc.collect(2)
        full_collections.clear()
        # Due (3 generation-1 collections) but not overdue (LATEST x 3): none while busy.
        while gc.get_count()[2] < 3 * 2:
            _garbage(20)
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert full_collections == []
        busy = False
        for _ in range(100):
            await asyncio.sleep(0.01)
            if full_collections:
                break
        assert len(full_collections) == 1
    assert gc.get_threshold() == (50, 2, 3)


async def test_an_overdue_full_collection_happens_even_while_busy(
    full_collections: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gc_pauses, "CHECK_S", 0.01)
    async with quiet_full_collections(lambda: False):
        gc.collect(2)
        full_collections.clear()
        for _ in range(2000):
            _garbage(20)
            await asyncio.sleep(0.001)
            if full_collections:
                break
        assert len(full_collections) == 1
        assert gc.get_count()[2] < 3 * LATEST
