"""The run queue: a run is a row first; workers claim it with a fenced lease, renew it while
they run it, and wake each other (and every other process) with NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import psycopg
from sqlalchemy import text

from server.background import supervise
from server.settings import Settings
from stores.errors import NotFoundError
from stores.sql import runs as run_store
from stores.sql.database import Database, Timeouts, connect
from stores.sql.filters import Filter
from stores.sql.models import Agent, Run
from stores.sql.runs import RunToken
from stores.sql.threads import ThreadTTL

log = logging.getLogger(__name__)

CHANNEL = "switchboard_runs"
RECENT_DONE = 10_000  # how many "done" NOTIFYs a process remembers
FREED = "freed"  # "new freed": a finish freed another run of its thread
CancelAction = Literal["interrupt", "rollback"]
StopReason = Literal["interrupt", "rollback", "lost"]


def cancel_action(reason: str | None) -> CancelAction:
    """The action of a recorded cancel request ("rollback: ..." or anything else)."""
    return "rollback" if reason and reason.startswith("rollback") else "interrupt"


_T = TypeVar("_T")
_SHIELDED: set[asyncio.Task[Any]] = set()


async def shielded(work: Coroutine[Any, Any, _T]) -> _T:
    """`await asyncio.shield(work)` with one lap of the event loop fewer: `work` runs in a task
    of its own, which a cancellation of the caller does not reach, and hands its result to the
    caller itself (`asyncio.shield` hands it on from the task's done callback, which runs one
    lap later, and only then wakes the caller)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    async def run() -> None:
        try:
            result = await work
        except BaseException as error:
            if not done.done():
                if isinstance(error, asyncio.CancelledError):
                    done.cancel()
                else:
                    done.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        if not done.done():
            done.set_result(result)

    task = loop.create_task(run())
    _SHIELDED.add(task)
    task.add_done_callback(_SHIELDED.discard)
    return await done


@dataclass(eq=False, slots=True)
class Attempt:
    """One claim of a run by a worker of this process: the run as claimed, its fencing token,
    and the task executing its graph (which `stop` cancels, saying why)."""

    run: Run
    token: RunToken
    task: asyncio.Task[Any] | None = None
    stop_reason: StopReason | None = None
    lease_deadline: float = 0.0  # loop time after which the claim may have lapsed
    ended: bool = False  # a renewal found the run finished by this attempt: nothing to hold

    def stop(self, reason: StopReason) -> None:
        """Cancel the graph's task (the first reason wins); nothing once it is done. A stop
        that comes before the task exists (a run claimed at creation whose stream's client
        left right after its first event: the attempt's own task has not run yet) is kept,
        and the executor cancels the task as it creates it."""
        if self.task is not None and self.task.done():
            return
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.task is not None:
            self.task.cancel()


Execute = Callable[[Attempt], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Reservation:
    """A slot of this process taken for a run about to be written claimed (`claim`), and the
    loop time before its transaction began (its lease deadline counts from then)."""

    claim: run_store.InlineClaim
    sent: float


def _nobody(thread_id: uuid.UUID) -> None:
    """No follower to wake here: the commit's NOTIFY wakes them all."""


@dataclass(frozen=True, slots=True)
class Telling:
    """Whom one transaction creating or claiming a run tells, decided before it is sent
    (`RunQueue.telling`). While another process listens, its commit NOTIFYs them: `notify` on
    the run channel, and the thread's stream (`notify_thread`). Alone, it NOTIFYs nobody (a
    NOTIFYing commit holds PostgreSQL's one notification-queue lock through its WAL flush,
    serialising every such commit of the database): this process acts on its own payloads
    itself, and `wake(thread_id)` wakes its followers of the thread's stream after the commit.
    """

    notify_thread: bool  # the commit NOTIFYs the thread's stream (another process listens)
    notify: run_store.Notify | None  # its NOTIFYs on the run channel; None when alone
    wake: Callable[[uuid.UUID], None]  # after the commit: this process's thread followers


@dataclass(slots=True)
class _Waiters:
    events: set[asyncio.Event] = field(default_factory=set)


class RunQueue:
    """Submits, claims and cancels runs in PostgreSQL, shared by every server process.

    A claim increments the run's `attempt`, which is the claim's fencing token: renewals,
    event writes and the finishing write go through only while the run's attempt is still it.
    The holder renews its lease every `lease_s / 3`; when it cannot renew in time (the database
    is unreachable, or the renewal hangs) it stops its own run before the lease can lapse, so
    another worker that reclaims the run never runs beside it. Processes wake each other with
    NOTIFY on `switchboard_runs` ("new", "cancel <run> <action>", "done <run>").
    """

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        database_url: str,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self.db = database
        self.settings = settings
        self.url = database_url
        self.timeouts = timeouts
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_s = settings.run_lease_s
        # Stop a run this long before its lease could lapse: room for the cancellation.
        self.margin_s = min(self.lease_s / 6, 5.0)
        self.attempts: dict[uuid.UUID, Attempt] = {}
        self._held: dict[RunToken, Attempt] = {}  # attempts whose lease the renewer renews
        self._renew_conn: psycopg.AsyncConnection[Any] | None = None  # the renewer's own
        # Capacity: at most `run_workers` attempts execute here at once (claimed by the
        # dispatcher, or at creation); `_busy` counts them and the slots being claimed.
        self.capacity = settings.run_workers
        self._busy = 0
        self._execute: Execute | None = None
        self._launched: Callable[[RunToken], None] | None = None
        # Whether another process listens (`RunEventLog.notifying`), and how to wake this
        # process's followers of a thread's stream when a commit did not NOTIFY them.
        self._others: Callable[[], bool] = lambda: True
        self._wake_thread: Callable[[uuid.UUID], None] = lambda thread_id: None
        self._wake_run: Callable[[uuid.UUID], None] = lambda run_id: None
        self._executing: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()  # set: look for runs (a "new", a slot freed, a reconnect)
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._done: dict[uuid.UUID, _Waiters] = {}
        self._announced: set[uuid.UUID] = set()  # finished with their NOTIFY sent
        self._results: dict[uuid.UUID, Run] = {}  # finished here, for the waiters here
        # Runs lately announced done (so a waiter that comes after the NOTIFY reads them).
        self._recent_done: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(
        self,
        execute: Execute,
        *,
        launched: Callable[[RunToken], None] | None = None,
        others: Callable[[], bool] | None = None,
        wake_thread: Callable[[uuid.UUID], None] | None = None,
        wake_run: Callable[[uuid.UUID], None] | None = None,
    ) -> None:
        """Start the NOTIFY listener, the lease renewer and the dispatcher that claims runs
        while this process has capacity (`run_workers` runs at once) and hands each to
        `execute` in a task of its own (`launched(token)` is called first, synchronously). With
        no capacity (0) the process only accepts runs.

        While `others()` is false (no other process listens), a claim, a creation or a finish
        here commits no NOTIFY (each would take PostgreSQL's one notification-queue lock
        through its WAL flush; `telling`, `finish_notify`) and `wake_thread(thread_id)` wakes
        this process's followers of the thread's stream instead. `wake_run(run_id)` is called
        for every "done" (here or NOTIFYed): the run's followers here read its status again
        (one that ended pending stored no event to wake them)."""
        self._execute = execute
        self._launched = launched
        if others is not None:
            self._others = others
        if wake_thread is not None:
            self._wake_thread = wake_thread
        if wake_run is not None:
            self._wake_run = wake_run
        self._tasks.append(asyncio.create_task(self._listen(), name="runs-listener"))
        renewer = supervise("runs-lease-renewer", self._renew_forever)
        self._tasks.append(asyncio.create_task(renewer, name="runs-lease-renewer"))
        if self.capacity > 0:
            dispatcher = supervise("runs-dispatcher", self._dispatch_forever)
            self._tasks.append(asyncio.create_task(dispatcher, name="runs-dispatcher"))

    async def aclose(self) -> None:
        """Stop the workers; runs they held go back to pending so another process resumes
        them at once (instead of after their lease)."""
        self._closing = True
        held = [attempt.token for attempt in self.attempts.values()]
        tasks = [*self._tasks, *self._executing]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        try:
            if await run_store.release_runs(self.db, held):
                await self.notify("new")
        except Exception as error:  # their leases lapse instead
            log.warning("could not hand back %d runs at shutdown: %s", len(held), error)

    # -- submitting, cancelling, waiting -----------------------------------------------------

    async def submit(
        self,
        *,
        thread_id: uuid.UUID,
        assistant: Agent,
        kwargs: Mapping[str, Any],
        metadata: Mapping[str, Any],
        multitask_strategy: str = "enqueue",
        if_not_exists: Literal["create", "reject"] = "reject",
        temporary: bool = False,
        thread_ttl: ThreadTTL | None = None,
        creator: run_store.RunCreator = run_store.NOBODY,
        starting: Callable[[Run], None] | None = None,
    ) -> Run:
        """Write the run row (applying the multitask strategy); a thread the run creates gets
        `thread_ttl`; the run executes as `creator`. `starting(run)` is called when the run
        is about to start here at once (before its attempt's task exists).

        When this process has a free slot and the run can start at once, the row is written
        already claimed by this process (attempt 1, with its lease) and the run starts here
        now: no NOTIFY wakes a worker, no claim follows. Otherwise it waits in the queue and a
        worker (of any process) is woken to claim it.
        """

        async def write() -> Run:
            reservation = self.reserve()
            # Alone, nothing but this process hears the commit's NOTIFYs: it sends none (its
            # cancels are dispatched here, its "new" by `adopt`, its followers woken here).
            with self.creating(thread_id) as telling:
                try:
                    run, cancels = await run_store.create_run(
                        self.db,
                        thread_id=thread_id,
                        assistant_id=assistant.id,
                        graph_id=assistant.graph_id,
                        kwargs={**kwargs, "temporary": temporary},
                        metadata=metadata,
                        multitask_strategy=multitask_strategy,
                        if_not_exists=if_not_exists,
                        temporary=temporary,
                        thread_ttl=thread_ttl,
                        notify=telling.notify,
                        creator=creator,
                        claim=reservation.claim if reservation else None,
                        notify_thread=telling.notify_thread,
                    )
                except BaseException:
                    self.release(reservation)
                    raise
            for payload in (f"cancel {r.run_id} {r.action}" for r in cancels):
                self.dispatch(payload)  # the others hear it from the commit
            self.adopt(run, reservation, starting)
            return run

        # Shielded: a request cancelled mid-commit still launches the run it claimed.
        return await shielded(write())

    async def create_at_once(
        self,
        *,
        thread_id: uuid.UUID,
        assistant_id: uuid.UUID,
        graph_ids: list[str],
        kwargs: Mapping[str, Any],
        metadata: Mapping[str, Any],
        multitask_strategy: str = "enqueue",
        creator: run_store.RunCreator = run_store.NOBODY,
        starting: Callable[[Run], None] | None = None,
        ask_fresh: bool = False,
    ) -> tuple[Run, str] | None:
        """`submit`'s common case in one round trip (`run_store.create_run_at_once`): a run on
        an existing thread with no run in flight, by an assistant (read in the same statement)
        whose graph is one of `graph_ids`. The run and its graph id; None when nothing was
        written (take `submit`, which says why or applies the multitask strategy).

        In the caller's task: a caller cancelled (or failing) while the statement may have
        gone through leaves it to a background task to learn what was written, and start the
        run it claimed (or give its slot back).

        While no other process listens, its commit NOTIFYs nobody (`telling`): neither the
        thread's stream for a run it claims nor "new" for one it leaves pending (no slot free
        here); `adopt` wakes this process's dispatcher for that one."""
        with self.creating(thread_id) as telling:
            reservation = self.reserve()
            run_id = uuid.uuid4()
            try:
                written = await run_store.create_run_at_once(
                    self.db,
                    run_id=run_id,
                    thread_id=thread_id,
                    assistant_id=assistant_id,
                    graph_ids=graph_ids,
                    kwargs={**kwargs, "temporary": False},
                    metadata=metadata,
                    multitask_strategy=multitask_strategy,
                    # Alone, a run left pending NOTIFYs no "new" either: `adopt` wakes
                    # this process's dispatcher after the commit.
                    notify=telling.notify,
                    creator=creator,
                    claim=reservation.claim if reservation else None,
                    ask_fresh=ask_fresh,
                    notify_thread=telling.notify_thread,
                )
            except BaseException:
                # Cancelled or failed, maybe after PostgreSQL had the statement: find out.
                self.background(self._settle(thread_id, run_id, reservation))
                raise
            if written is None:
                self.release(reservation)
                return None
            self.adopt(written[0], reservation, starting)
            return written

    async def _settle(
        self, thread_id: uuid.UUID, run_id: uuid.UUID, reservation: Reservation | None
    ) -> None:
        """After a creation whose caller was cancelled: start the run it wrote claimed, wake
        a worker for one it left pending, or give the slot back when it wrote nothing."""
        try:
            run = await run_store.created_run(self.db, thread_id=thread_id, run_id=run_id)
        except BaseException:
            self.release(reservation)  # a run it claimed is taken over once its lease lapses
            raise
        if run is None:
            self.release(reservation)
        else:
            self.adopt(run, reservation)

    # -- whom a creation or a claim tells ----------------------------------------------------

    def telling(self) -> Telling:
        """Whom the commit about to be sent (a run's creation, a claim) tells: every process
        while another one listens (`others`, given at `start`), else nobody (see `Telling`)."""
        if self._others():
            return Telling(True, run_store.Notify(CHANNEL, self.owner), _nobody)
        return Telling(False, None, self._wake_thread)

    @contextlib.contextmanager
    def creating(self, thread_id: uuid.UUID) -> Iterator[Telling]:
        """`telling` for a transaction creating a run of `thread_id`, whose followers here are
        woken when the block ends, if its commit did not NOTIFY them: also when it failed or
        was cancelled, as the statement may have gone through."""
        telling = self.telling()
        try:
            yield telling
        finally:
            telling.wake(thread_id)

    # -- claiming at creation (for any writer of run rows) ----------------------------------

    def reserve(self) -> Reservation | None:
        """A slot of this process for a run about to be written, and the claim to write it
        with (`create_run(claim=...)`, or a writer of its own that sets the same columns);
        None when no slot is free. Hand it to `adopt` once the row is committed, or to
        `release` if it was not written."""
        if not self._reserve():
            return None
        sent = asyncio.get_running_loop().time()  # the row's lease counts from later: now()
        return Reservation(run_store.InlineClaim(self.owner, self.lease_s), sent)

    def adopt(
        self,
        run: Run,
        reservation: Reservation | None,
        starting: Callable[[Run], None] | None = None,
    ) -> None:
        """After the commit that wrote `run`: start it here now if it was written claimed by
        this process (in the reserved slot), calling `starting(run)` just before; otherwise
        give the slot back and wake a worker (the commit's "new" woke the other processes)."""
        if reservation is not None and self._adopts(run, reservation):
            if starting is not None:
                starting(run)
            self._launch(run, reservation.sent)
            return
        self.release(reservation)
        self.dispatch("new")

    def _adopts(self, run: Run, reservation: Reservation | None) -> bool:
        """Whether `adopt` starts `run` here (written claimed by this process)."""
        return reservation is not None and run.status == "running" and run.lease_owner == self.owner

    def release(self, reservation: Reservation | None) -> None:
        """Give back the slot of a reservation whose run was not written."""
        if reservation is not None:
            self._release_slot()

    async def cancel(
        self,
        run_ids: list[uuid.UUID],
        *,
        action: CancelAction = "interrupt",
        thread_id: uuid.UUID | None = None,
        reason: str = "cancelled by a client",
        access: Filter | None = None,
    ) -> None:
        """Cancel runs: pending ones at once, running ones by the process that holds them
        (with `access`: only runs on threads that satisfy it).

        While no other process listens, nothing is NOTIFYed: the cancels and the "done"s are
        acted on here (a run executing here is stopped at once, waiters here are woken). A
        process that started meanwhile, unheard yet, finds a cancel of a run it holds in its
        next lease renewal (the request is in the run's row), and a waiter there reads the run
        at its next poll."""
        requests = await run_store.cancel_runs(
            self.db, run_ids, action=action, reason=reason, thread_id=thread_id, access=access
        )
        payloads = (
            *(f"cancel {r.run_id} {r.action}" for r in requests),
            *(f"done {run_id}" for run_id in run_ids),
        )
        if not self._others():
            for payload in payloads:
                self.dispatch(payload)
            return
        await self.notify(*payloads)

    def cancel_soon(self, run_id: uuid.UUID, *, reason: str) -> None:
        """`cancel` in a task of its own: for callers that are being cancelled (disconnects)."""
        self.background(self.cancel([run_id], reason=reason))

    def background(self, work: Awaitable[None]) -> None:
        """Run `work` in a task this queue keeps (and awaits briefly at shutdown)."""

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("background run work failed")

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait(
        self, run_id: uuid.UUID, *, timeout_s: float | None = None, fresh: bool = False
    ) -> Run | None:
        """Wait until the run is finished; the final row (None if it was deleted: rollback).

        A run finished by this process is handed to its waiters as it ends (no read); one
        finished elsewhere is read once its "done" NOTIFY arrives (or every `run_poll_s`).
        `fresh` (a run just created): it is not read before either of those.
        """
        event = asyncio.Event()
        waiters = self._done.setdefault(run_id, _Waiters())
        waiters.events.add(event)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        read = not fresh or run_id in self._recent_done
        try:
            while True:
                finished = self._results.get(run_id)
                if finished is not None:
                    return finished
                run = None
                if read or run_id in self._recent_done:
                    try:
                        run = await run_store.get_run(self.db, run_id)
                    except NotFoundError:
                        return None
                    except Exception as error:  # the database is restarting: look again soon
                        if deadline is not None and loop.time() > deadline:
                            raise
                        log.warning("reading run %s failed (%s); retrying", run_id, error)
                    if run is not None and run.status in run_store.DONE:
                        return run
                read = True
                remaining = self.settings.run_poll_s
                if deadline is not None:
                    remaining = min(remaining, deadline - loop.time())
                    if remaining <= 0:
                        status = run.status if run is not None else "unknown"
                        raise TimeoutError(f"run {run_id} is still {status}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
                event.clear()
        finally:
            waiters.events.discard(event)
            if not waiters.events and self._done.get(run_id) is waiters:
                del self._done[run_id]
                self._results.pop(run_id, None)

    def finished(self, run: Run) -> None:
        """Hand the final row of a run this process just finished to its waiters here (if
        any), before its "done" wakes them."""
        if run.id in self._done:
            self._results[run.id] = run

    # -- NOTIFY ----------------------------------------------------------------------------

    async def notify(self, *payloads: str) -> None:
        """Act on `payloads` here at once, and tell the other processes (one round trip)."""
        for payload in payloads:
            self.dispatch(payload)
        if not payloads:
            return
        params = {f"p{n}": f"{payload}|{self.owner}" for n, payload in enumerate(payloads)}
        calls = ", ".join(f"pg_notify(:channel, :p{n})" for n in range(len(payloads)))
        async with self.db.engine.begin() as conn:
            await conn.execute(text(f"SELECT {calls}"), {"channel": CHANNEL, **params})

    def finish_notify(self, run_id: uuid.UUID) -> run_store.Notify:
        """What the commit that finishes `run_id` tells the other processes, only while another
        one listens (a NOTIFYing commit holds PostgreSQL's notification-queue lock through its
        WAL flush, one such commit of the database at a time): its "done", and "new freed" (a
        "new" to them) when another run of its thread waits. Either way this process's waiters
        are woken by `announce_done`, and its dispatcher, which may take the waiting run, after
        the commit (`on_busy`)."""
        # "new" only when another run of its thread waits: a finished run frees no other run
        # but by its slot, and a freed slot that was the last one wakes the dispatcher
        # (`_release_slot`); with a slot free, runs that can start were already claimed.
        if not self._others():
            return run_store.Notify(CHANNEL, self.owner, on_busy=self._signal)
        return run_store.Notify(
            CHANNEL, self.owner, (f"done {run_id}",), (f"new {FREED}",), on_busy=self._signal
        )

    def announced(self, run_id: uuid.UUID) -> None:
        """Note that the commit that finished `run_id` answered: it told the other processes
        (while one listens), and `on_busy` woke this process's dispatcher if need be."""
        self._announced.add(run_id)

    async def announce_done(self, run_id: uuid.UUID) -> None:
        """Wake this process's waiters of a run whose attempt here ended, and tell the others
        unless the commit that finished it did.

        An attempt that ended without a finish that answered (`announced`) may have freed a run
        queued on its thread, or left its own run pending: a finish given up after its answer
        was lost (whether it committed, and whether another run waits, is not known), a run
        rolled back (deleted), handed back or taken over. The others are told "new", and this
        process's dispatcher looks as well: also alone, where nothing is sent (else a run
        queued behind it waited for the poll, `run_poll_s`), and when the NOTIFY fails."""
        if run_id in self._announced:
            self._announced.discard(run_id)
            self.dispatch(f"done {run_id}")
            return
        if not self._others():  # alone: nobody to tell
            self.dispatch(f"done {run_id}")
            self.dispatch("new")
            return
        try:
            await self.notify(f"done {run_id}", "new")
        except Exception as error:  # the others poll; ours are woken here
            log.warning("could not announce the end of run %s: %s", run_id, error)
            self.dispatch(f"done {run_id}")
            self.dispatch("new")

    def _signal(self) -> None:
        """Have the dispatcher look for a run (at once if it waits; after its claim if not)."""
        self._wake.set()

    async def _listen(self) -> None:
        """Follow NOTIFYs until closed; a lost connection is logged and reopened."""
        backoff = 0.2
        while not self._closing:
            try:
                async with await connect(self.url, self.timeouts) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.2
                    self._signal()  # cancels sent meanwhile land with the next lease renewal
                    async for notice in conn.notifies():
                        payload, _, sender = notice.payload.rpartition("|")
                        if sender != self.owner:  # ours were handled when sent
                            self.dispatch(payload)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("run listener lost its connection (%s); reconnecting", error)
                # Whatever was sent meanwhile: look for runs, and re-read the waited ones.
                self._signal()
                for waiters in self._done.values():
                    for event in waiters.events:
                        event.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.run_poll_s)

    def dispatch(self, payload: str) -> None:
        """Act on one NOTIFY payload in this process."""
        kind, _, rest = payload.partition(" ")
        if kind == "new":
            self._signal()
        elif kind == "cancel":
            raw_id, _, action = rest.partition(" ")
            with contextlib.suppress(ValueError):
                attempt = self.attempts.get(uuid.UUID(raw_id))
                if attempt is not None:
                    attempt.stop("rollback" if action == "rollback" else "interrupt")
        elif kind == "done":
            with contextlib.suppress(ValueError):
                run_id = uuid.UUID(rest)
                self._recent_done[run_id] = None
                if len(self._recent_done) > RECENT_DONE:
                    self._recent_done.popitem(last=False)
                waiters = self._done.get(run_id)
                for event in waiters.events if waiters else ():
                    event.set()
                self._wake_run(run_id)

    # -- workers and leases ----------------------------------------------------------------

    def _reserve(self) -> bool:
        """Take a slot of this process's capacity, if one is free (and the queue is open)."""
        if self._closing or self._execute is None or self._busy >= self.capacity:
            return False
        self._busy += 1
        return True

    def _release_slot(self) -> None:
        """Give a slot back; a dispatcher that waited for one looks for runs again."""
        full = self._busy >= self.capacity
        self._busy -= 1
        if full:
            self._signal()

    def _launch(self, run: Run, sent: float) -> None:
        """Execute a run claimed by this process (`sent`: loop time before the claim was sent)
        in a task of its own, in the slot reserved for it."""
        attempt = Attempt(
            run=run,
            token=RunToken(run.id, run.attempt),
            lease_deadline=sent + self.lease_s - self.margin_s,
        )
        self.attempts[run.id] = attempt
        if self._launched is not None:
            self._launched(attempt.token)
        task = asyncio.create_task(self._run_attempt(attempt), name=f"runs-attempt-{run.id}")
        self._executing.add(task)
        task.add_done_callback(self._executing.discard)

    async def _run_attempt(self, attempt: Attempt) -> None:
        """Execute one attempt; a failure is logged, never fatal (its lease lapses and another
        worker takes the run over). Its slot is given back at the end."""
        run_id = attempt.token.run_id
        try:
            assert self._execute is not None
            await self._execute(attempt)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("executing run %s failed", run_id)
        finally:
            if self.attempts.get(run_id) is attempt:
                del self.attempts[run_id]
            self._release_slot()

    async def _dispatch_forever(self) -> None:
        """Claim runs while this process has a free slot, each executed in a task of its own;
        wait for a "new" NOTIFY (or `run_poll_s`, for leases that lapse) when there are none,
        and for a slot when all are taken."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            if not self._reserve():
                self._wake.clear()
                await self._wake.wait()  # a slot freed
                continue
            self._wake.clear()
            sent = loop.time()
            telling = self.telling()
            try:
                claim = await run_store.claim_run(
                    self.db,
                    owner=self.owner,
                    lease_s=self.lease_s,
                    notify_thread=telling.notify_thread,
                )
            except asyncio.CancelledError:
                self._busy -= 1
                raise
            except Exception as error:
                log.warning("claiming a run failed: %s", error)
                claim = None
            if claim is None:
                self._busy -= 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.run_poll_s)
                continue
            self._launch(claim.run, sent)
            if claim.run.thread_id is not None:
                telling.wake(claim.run.thread_id)  # the run has its place in the thread's stream
            if not claim.more:  # nothing else pending: wait for word of new runs
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.run_poll_s)

    async def hold(self, attempt: Attempt) -> None:
        """Hold `attempt`'s lease until cancelled; stop its run when the claim is lost.

        The process's one renewer (`_renew_forever`) renews the leases of every attempt held
        here, in one statement on a connection of its own, every `lease_s / 3`; each renewal
        that succeeded moves the attempt's `lease_deadline` on. The claim is good until
        `lease_s` after the last renewal that succeeded was sent (the database counts from
        later), less a margin: when none succeeds by then, the run is stopped here, before
        another worker can reclaim it. A renewal that finds another attempt holding the run
        stops it at once; one that finds a cancel request (whose NOTIFY was missed) cancels it.
        """
        loop = asyncio.get_running_loop()
        self._held[attempt.token] = attempt
        try:
            while not attempt.ended:
                now = loop.time()
                if now >= attempt.lease_deadline:
                    log.warning(
                        "run %s (attempt %d): no lease renewal succeeded in time; stopping it here",
                        attempt.token.run_id,
                        attempt.token.attempt,
                    )
                    attempt.stop("lost")
                    return
                await asyncio.sleep(attempt.lease_deadline - now)
        finally:
            if self._held.get(attempt.token) is attempt:
                del self._held[attempt.token]

    async def _renew_forever(self) -> None:
        """Renew the leases of all attempts held here, every `lease_s / 3`, in one statement.

        The statement runs on an autocommit connection of the renewer's own, so renewals never
        wait behind request traffic for a pooled connection. A cut connection is reopened on
        the next beat; a renewal that fails or hangs is given up once no attempt it covers
        could still use it (their deadlines stop them meanwhile).
        """
        loop = asyncio.get_running_loop()
        interval = self.lease_s / 3
        try:
            while not self._closing:
                await asyncio.sleep(interval)
                sent = loop.time()
                held = [a for a in self._held.values() if a.lease_deadline > sent]
                if not held:
                    continue
                await self._renew_held(held, sent)
        finally:
            await self._drop_renewal_connection()

    async def _renew_held(self, held: list[Attempt], sent: float) -> None:
        """One beat of the renewer: renew `held` (snapshot at loop time `sent`), then act on
        what the statement found for each attempt. A run that finished meanwhile (its finish
        committed after the snapshot) is let go: it is not stopped, nor said taken over."""
        last_deadline = max(a.lease_deadline for a in held)
        try:
            renewals = await asyncio.wait_for(
                self._renew([a.token for a in held]),
                timeout=max(0.01, last_deadline - sent),
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a blip: the next beat may succeed, until deadlines
            log.warning("renewing %d run leases failed: %r", len(held), error)
            await self._drop_renewal_connection()  # reconnect on the next beat
            return
        for attempt in held:
            renewal = renewals[attempt.token]
            if renewal.held:
                attempt.lease_deadline = sent + self.lease_s - self.margin_s
                if renewal.cancel_reason:  # a cancel whose NOTIFY we missed
                    attempt.stop(cancel_action(renewal.cancel_reason))
                continue
            self._not_renewed(attempt, renewal)

    def _not_renewed(self, attempt: Attempt, renewal: run_store.Renewal) -> None:
        """Act on a renewal that did not extend `attempt`'s lease, by what it found."""
        run_id, mine = attempt.token.run_id, attempt.token.attempt
        if renewal.status in run_store.DONE and renewal.attempt == mine:
            # Finished by this attempt (its finish committed after the beat's snapshot):
            # nothing to stop, nothing to renew any more.
            log.debug("run %s (attempt %d) finished; its lease needs no renewal", run_id, mine)
            attempt.ended = True
            if self._held.get(attempt.token) is attempt:
                del self._held[attempt.token]
            return
        if renewal.status == "running" and renewal.attempt == mine:
            # The row changed under the renewal (a write committed while it waited for the
            # row's lock, e.g. this attempt's finish): the next beat tells; until then the
            # deadline of the last renewal that succeeded stands.
            log.debug("run %s (attempt %d): renewal undecided; next beat", run_id, mine)
            return
        if renewal.status is None:
            why = "it was deleted"
        elif renewal.attempt is not None and renewal.attempt != mine:
            why = f"its lease was taken over by attempt {renewal.attempt} ({renewal.status})"
        else:
            why = f"it is {renewal.status} again (handed back)"
        log.warning("run %s (attempt %d): %s; stopping it here", run_id, mine, why)
        attempt.stop("lost")

    async def _renew(self, tokens: list[RunToken]) -> dict[RunToken, run_store.Renewal]:
        """One renewal of `tokens` on the renewer's connection (opened first if need be)."""
        if self._renew_conn is None or self._renew_conn.closed:
            self._renew_conn = await connect(self.url, self.timeouts)
        return await run_store.renew_leases(self._renew_conn, tokens, lease_s=self.lease_s)

    async def _drop_renewal_connection(self) -> None:
        conn, self._renew_conn = self._renew_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
