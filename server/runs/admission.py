"""Run admission: how many of this process's runs execute their graph at once, bounded by how
late the event loop comes round, so that HTTP requests still get their turn while runs execute."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

PROBE_S = 0.005  # how often the loop's lag is sampled (a sleep of this long, and how late it woke)
WINDOW_S = 0.05  # loop time the samples of one decision cover (fewer samples when it is late)
FLOOR = 4  # runs admitted at once however late the loop is
LONG_S = 0.1  # a graph whose recent runs all took longer than this is admitted without waiting
RECENT = 32  # runs of a graph whose durations say whether it is long


class RunAdmission:
    """Admits runs to execute their graph, at most `limit` at once, first come first served.

    Every run of a process shares its one event loop with the HTTP requests it serves: a
    request takes a few laps of that loop (its read, its route, its round trip to PostgreSQL,
    its first write), and a lap lasts as long as the ready callbacks of every executing run.
    When the loop comes round late (the mean lateness of a `PROBE_S` sleep over `WINDOW_S`
    above `target_lag_s`), `limit` falls to three quarters of the runs executing, never below
    `FLOOR`; while it is early (below half the target) and runs wait, it rises by one a window
    (by a quarter below a quarter of the target), up to `capacity`. Runs that wait on I/O (a
    model, a tool) leave the loop early, so they are all admitted; runs that keep it busy are
    admitted a few at a time, and each finishes sooner. A waiting run holds its slot and its
    lease (it is claimed and running), and its first event went out at its creation.

    Runs of a graph whose `RECENT` last runs each took longer than `LONG_S` in their graph
    (streaming a model's tokens, waiting on tools) are admitted at once and not counted: they
    mostly wait, and making them wait too would cut how many complete per second (runs of a
    graph paced by 20 ms tokens: 0.87x runs/s at concurrency 64 when they took turns). The
    short, loop-bound runs take turns.

    `target_lag_s` 0: every run is admitted at once (no probe).
    """

    def __init__(self, *, capacity: int, target_lag_s: float) -> None:
        self.capacity = max(capacity, FLOOR)
        self.target_lag_s = target_lag_s
        self.limit = self.capacity
        self.active = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._lag_s = 0.0  # the lateness summed over this window's samples
        self._count = 0  # its samples
        self._busy = asyncio.Event()  # set while runs execute or wait: the probe samples
        self._durations: dict[str, deque[float]] = {}  # by graph: its recent runs' seconds

    @property
    def idle(self) -> bool:
        """No run executes its graph or waits to (here)."""
        return self.active == 0 and not self._waiting

    @property
    def waiting(self) -> int:
        """Runs waiting to be admitted."""
        return sum(1 for waiter in self._waiting if not waiter.done())

    def long(self, graph_id: str) -> bool:
        """Whether the recent runs of `graph_id` all took longer than `LONG_S` (admitted at
        once)."""
        recent = self._durations.get(graph_id)
        return recent is not None and len(recent) >= FLOOR and min(recent) > LONG_S

    @contextlib.asynccontextmanager
    async def admitted(self, graph_id: str) -> AsyncIterator[None]:
        """Hold one of the `limit` places while the block runs (waiting for one first), unless
        the graph's runs are long (`long`); either way, time the block for the graph."""
        loop = asyncio.get_running_loop()
        counted = not self.long(graph_id)
        if counted:
            await self._enter()
        started = loop.time()
        try:
            yield
        finally:
            self.record(graph_id, loop.time() - started)
            if counted:
                self._leave()

    def record(self, graph_id: str, seconds: float) -> None:
        """Remember how long a run of `graph_id` took in its graph (`long` reads them)."""
        recent = self._durations.get(graph_id)
        if recent is None:
            recent = self._durations[graph_id] = deque(maxlen=RECENT)
        recent.append(seconds)

    async def _enter(self) -> None:
        self._busy.set()
        if self.active < self.limit and not self._waiting:
            self.active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._leave()  # admitted as it was cancelled: hand the place on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
            raise

    def _leave(self) -> None:
        self.active -= 1
        self._admit()

    def _admit(self) -> None:
        while self._waiting and self.active < self.limit:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.active += 1

    def observe(self, lag_s: float) -> None:
        """Take one sample of the loop's lag (how late a `PROBE_S` sleep woke); once the samples
        cover `WINDOW_S`, move `limit` by their mean."""
        self._lag_s += lag_s
        self._count += 1
        if self._count * PROBE_S + self._lag_s < WINDOW_S:
            return
        mean = self._lag_s / self._count
        self._lag_s, self._count = 0.0, 0
        if mean > self.target_lag_s:
            self.limit = max(FLOOR, min(self.limit, self.active) * 3 // 4)
        elif mean < self.target_lag_s / 2 and self._waiting and self.limit < self.capacity:
            step = max(1, self.limit // 4) if mean < self.target_lag_s / 4 else 1
            self.limit = min(self.capacity, self.limit + step)
            self._admit()

    async def watch(self) -> None:
        """Sample the loop's lag for as long as the engine runs (`observe` each sample)."""
        if self.target_lag_s <= 0:
            return
        loop = asyncio.get_running_loop()
        while True:
            if self.active == 0 and not self._waiting:
                self._busy.clear()
                self._lag_s, self._count = 0.0, 0
                await self._busy.wait()
            started = loop.time()
            await asyncio.sleep(PROBE_S)
            self.observe(max(0.0, loop.time() - started - PROBE_S))
