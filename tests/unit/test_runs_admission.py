"""Run admission (server/runs/admission.py): a late event loop admits fewer runs at once, an early
one more; waiting runs go in order; cancelled ones take no place with them."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.runs import admission as admission_module
from server.runs.admission import FLOOR, LONG_S, PROBE_S, RECENT, WINDOW_S, RunAdmission

LATE = 0.05  # a lag far above the target
EARLY = 0.0


def _window(admission: RunAdmission, lag: float) -> None:
    """Samples of `lag` covering one decision's window."""
    covered = 0.0
    while covered < WINDOW_S:
        admission.observe(lag)
        covered += PROBE_S + lag


async def _hold(admission: RunAdmission, name: str, log: list[str], release: asyncio.Event) -> None:
    async with admission.admitted("g"):
        log.append(name)
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _squeezed() -> tuple[RunAdmission, asyncio.Event, list[str], list[asyncio.Task[None]]]:
    """An admission whose FLOOR places are held (until `release`) by runs that a late loop
    left at the floor: the next run waits."""
    admission = RunAdmission(capacity=8, target_lag_s=0.005)
    release = asyncio.Event()
    started: list[str] = []
    holders = [
        asyncio.create_task(_hold(admission, f"r{i}", started, release)) for i in range(FLOOR)
    ]
    await _settle()
    _window(admission, LATE)
    assert admission.limit == FLOOR
    return admission, release, started, holders


async def test_a_late_loop_lowers_the_limit_and_later_runs_wait_their_turn_in_order() -> None:
    admission = RunAdmission(capacity=8, target_lag_s=0.005)
    release = asyncio.Event()
    started: list[str] = []
    names = [f"r{i}" for i in range(8)]
    first = [asyncio.create_task(_hold(admission, name, started, release)) for name in names]
    await _settle()
    assert started == names  # the loop was never late: all at once
    _window(admission, LATE)
    assert admission.limit == 6  # three quarters of the runs executing
    later = [asyncio.create_task(_hold(admission, f"w{i}", started, release)) for i in range(3)]
    await _settle()
    assert started == names
    assert admission.waiting == 3
    release.set()  # the first eight end; the limit lets the others in, in the order they came
    await asyncio.gather(*first, *later)
    assert started[8:] == ["w0", "w1", "w2"]
    assert admission.active == 0
    assert admission.idle


async def test_the_limit_never_falls_below_the_floor() -> None:
    admission = RunAdmission(capacity=8, target_lag_s=0.005)
    release = asyncio.Event()
    started: list[str] = []
    tasks = [asyncio.create_task(_hold(admission, f"r{i}", started, release)) for i in range(8)]
    await _settle()
    for _ in range(10):
        _window(admission, LATE)
    assert admission.limit == FLOOR
    release.set()
    await asyncio.gather(*tasks)


async def test_an_early_loop_raises_the_limit_while_runs_wait() -> None:
    admission = RunAdmission(capacity=16, target_lag_s=0.005)
    release = asyncio.Event()
    started: list[str] = []
    tasks = [asyncio.create_task(_hold(admission, f"r{i}", started, release)) for i in range(FLOOR)]
    await _settle()
    _window(admission, LATE)
    assert admission.limit == FLOOR
    tasks += [asyncio.create_task(_hold(admission, f"w{i}", started, release)) for i in range(6)]
    await _settle()
    assert len(started) == FLOOR
    _window(admission, 0.002)  # below half the target: one more
    await _settle()
    assert admission.limit == FLOOR + 1
    assert started[FLOOR:] == ["w0"]
    _window(admission, 0.004)  # between half the target and the target: no change
    assert admission.limit == FLOOR + 1
    _window(admission, EARLY)  # below a quarter of it: by a quarter (at least one)
    await _settle()
    assert admission.limit == FLOOR + 1 + max(1, (FLOOR + 1) // 4)
    assert started[FLOOR:] == ["w0", "w1"]
    release.set()
    await asyncio.gather(*tasks)


async def test_a_run_cancelled_while_it_waits_takes_no_place_with_it() -> None:
    admission, release, started, holders = await _squeezed()
    cancelled = asyncio.create_task(_hold(admission, "gone", started, release))
    after = asyncio.create_task(_hold(admission, "next", started, release))
    await _settle()
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert admission.waiting == 1
    release.set()
    await asyncio.gather(*holders, after)
    assert "gone" not in started
    assert started[-1] == "next"
    assert admission.active == 0


async def test_a_run_cancelled_as_it_is_admitted_hands_its_place_on() -> None:
    admission, release, started, holders = await _squeezed()
    unlucky = asyncio.create_task(_hold(admission, "unlucky", started, release))
    after = asyncio.create_task(_hold(admission, "next", started, release))
    await _settle()
    holders[0].cancel()  # its place goes to `unlucky`, which is cancelled before it resumes
    await asyncio.sleep(0)
    unlucky.cancel()
    await asyncio.gather(holders[0], unlucky, return_exceptions=True)
    await _settle()
    assert started[-1] == "next"  # the place went on
    release.set()
    await asyncio.gather(*holders[1:], after)
    assert admission.active == 0


async def test_runs_of_a_graph_whose_runs_are_long_do_not_wait() -> None:
    """A graph whose recent runs each took longer than LONG_S (paced by a model) is admitted at
    once however late the loop is; one short run among its recent ones makes it wait again."""
    admission, release, started, holders = await _squeezed()
    for _ in range(FLOOR):  # runs of "paced" took longer than LONG_S
        admission.record("paced", LONG_S * 2)
    assert admission.long("paced")
    assert not admission.long("g")
    async with admission.admitted("paced"):  # no place free, admitted all the same
        assert admission.active == FLOOR
        started.append("paced")
    waiting = asyncio.create_task(_hold(admission, "short", started, release))
    await _settle()
    assert "short" not in started  # a short graph's run still waits its turn
    for _ in range(RECENT - 1):
        admission.record("paced", LONG_S * 2)
    admission.record("paced", LONG_S / 2)  # one quick run: "paced" takes turns again
    assert not admission.long("paced")
    release.set()
    await asyncio.gather(*holders, waiting)
    assert admission.active == 0


async def test_without_a_target_every_run_is_admitted_at_once() -> None:
    admission = RunAdmission(capacity=FLOOR, target_lag_s=0)
    release = asyncio.Event()
    started: list[str] = []
    tasks = [asyncio.create_task(_hold(admission, f"r{i}", started, release)) for i in range(FLOOR)]
    await _settle()
    await asyncio.wait_for(admission.watch(), 1)  # returns at once: nothing to watch
    assert len(started) == FLOOR
    release.set()
    await asyncio.gather(*tasks)


async def test_runs_that_keep_the_loop_busy_are_admitted_fewer_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the probe running, runs whose steps each hold the loop 10 ms make it late: the limit
    falls from 16 and, once the runs in excess end, no more than it execute at once."""
    monkeypatch.setattr(admission_module, "PROBE_S", 0.002)
    admission = RunAdmission(capacity=16, target_lag_s=0.003)
    watch = asyncio.create_task(admission.watch())
    most_after_cut: list[int] = []

    async def busy_run() -> None:
        async with admission.admitted("g"):
            for _ in range(10):
                time.sleep(0.01)  # noqa: ASYNC251 - on purpose: a run keeping the loop busy
                if admission.limit < 16:
                    most_after_cut.append(admission.active)
                await asyncio.sleep(0)

    try:
        await asyncio.gather(*(busy_run() for _ in range(32)))
    finally:
        watch.cancel()
    assert admission.limit < 16
    assert max(most_after_cut[-20:]) < 16
