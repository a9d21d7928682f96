"""The one writer: every change to runs and events is stored, then published, then observed.

Engine events (``emit``) and write operations (``submit``: creating a run, cancelling a queued
one, interrupting dead runs, claims and leases in a cluster...) wait in one line and are
written in batches, one transaction per batch (group commit). After the commit every event of
the batch — the engines' and the ones operations wrote — is handed to the bus in order, and
then to the observers (metrics, the monitor, the per-run log line). Nothing reaches a client
before it is stored, and no path writes events around this one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from corral.core.events import Event, EventType, dumps
from corral.errors import FencedError, RequestError, StoreError, StoreUnavailable
from corral.outage import Outage
from corral.store import statements as S
from corral.store.database import Database
from corral.store.ops import Op, finish_params
from corral.store.sql import Sql

log = logging.getLogger("corral.store.writer")

T = TypeVar("T")
Published = tuple[Event, bytes]
Publish = Callable[[Sequence[Published]], Awaitable[None]]
Observe = Callable[[Sequence[Event]], None]


@dataclass(slots=True)
class _Emit:
    event: Event
    payload: bytes
    done: asyncio.Future[None]


@dataclass(slots=True)
class _Submit:
    op: Op[Any]
    done: asyncio.Future[Any]
    deadline: float | None = None  # loop time after which a batch retry drops it


_Item = _Emit | _Submit


class EventWriter:
    """The app's one writer. ``async with`` starts it; leaving writes what is pending, stops.

    ``emit`` (an engine's :class:`~corral.core.engine.EventSink`) and ``submit`` are
    synchronous up to acceptance — an event's place in line is fixed when it is called — and
    return futures. A caller cancelled while waiting loses nothing: the writer still stores and
    publishes. Emission is pipelined: a run waits only for its terminal event's commit, or when
    the backlog is over ``max_backlog`` (the backpressure); delivery always follows the commit.
    A database that cannot be reached is waited out with backoff (a dropped batch would leave a
    gap in its runs' ``seq``); with ``retry_for_s`` set, a batch still failing after that long
    is refused (its callers get :class:`StoreError`) and nothing of it is published.
    """

    def __init__(
        self,
        db: Database,
        publish: Publish,
        observe: Observe | None = None,
        *,
        max_batch: int = 1024,
        max_backlog: int = 1024,
        retry_for_s: float | None = None,
        close_timeout_s: float = 15.0,
    ) -> None:
        self._db = db
        self._publish = publish
        self._observe = observe
        self._max_batch = max_batch
        self._max_backlog = max_backlog
        self._retry_for_s = retry_for_s
        self._close_timeout_s = close_timeout_s
        self._pending: list[_Item] = []
        self._accepted: asyncio.Future[None] | None = None  # a done future, reused
        self._attempts: dict[str, int] = {}  # run_id -> attempt, for fenced writers
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._publishing = Outage(
            log,
            "publishing stored events failed; clients catch up from the store",
            "publishing events works again",
        )

    async def __aenter__(self) -> EventWriter:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- accepting ------------------------------------------------------------------------------

    def emit(self, event: Event) -> asyncio.Future[None]:
        """Accept an engine's ``event``; the future resolves when the engine may go on."""
        if self._closing:
            raise StoreError("the event writer is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append(_Emit(event, event.to_json(), done))
        self._wakeup.set()
        if event.terminal or event.type is EventType.INPUT_REQUESTED:
            return done  # the run waits for the commit (for input_requested, see Questions.ask)
        if len(self._pending) > self._max_backlog:
            return done
        if self._accepted is None:
            self._accepted = loop.create_future()
            self._accepted.set_result(None)
        return self._accepted

    def submit(self, op: Op[T], *, within_s: float | None = None) -> asyncio.Future[T]:
        """Queue ``op``; the future has its result once committed and its events published.

        With ``within_s`` (a request waiting on it), an operation the database could not take
        within that long is withdrawn — never written later — and fails with
        :class:`StoreUnavailable`; without it, it waits for the database like events do.
        """
        if self._closing:
            raise StoreUnavailable("the server is stopping")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        deadline = None if within_s is None else loop.time() + within_s
        self._pending.append(_Submit(op, done, deadline))
        self._wakeup.set()
        return done

    def fence(self, run_id: str, attempt: int) -> None:
        """Write ``run_id``'s events only while its stored attempt is ``attempt``.

        Once another process took the run over (it bumped the attempt), this writer's events
        of it are refused with :class:`FencedError` and nothing of them is stored.
        """
        self._attempts[run_id] = attempt

    def unfence(self, run_id: str) -> None:
        self._attempts.pop(run_id, None)

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def close(self) -> None:
        """Write what is pending, then stop (idempotent). If the database does not take it
        within ``close_timeout_s``, the rest is refused and the writer stops anyway."""
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=self._close_timeout_s)
        if not done:
            log.error("closing with %d write(s) not stored: the database is away", self.backlog)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._fail(self._pending, StoreError("the server stopped before storing it"))
            self._pending.clear()

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            attempts = dict(self._attempts)
            try:
                batch, outcomes, emitted = await self._store(batch, attempts)
            except Exception as exc:
                if isinstance(exc, StoreUnavailable):
                    log.error("could not store %d write(s): the database is away", len(batch))
                    self._fail(batch, StoreError(f"the database did not store it: {exc}"))
                    continue
                log.warning("a batch failed (%s); writing its items one by one", exc)
                outcomes, emitted = await self._one_by_one(batch, attempts)
            await self._deliver(batch, outcomes, emitted)

    async def _store(
        self, batch: list[_Item], attempts: dict[str, int]
    ) -> tuple[list[_Item], list[Any], list[Published]]:
        """Write ``batch`` in one transaction, waiting out an unreachable database; returns
        what was written (operations past their deadline are withdrawn meanwhile)."""
        delay, waited = 0.05, 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                outcomes, emitted = await self._db.write(
                    functools.partial(_apply, batch=batch, attempts=attempts)
                )
                return batch, outcomes, emitted
            except StoreUnavailable as exc:
                if self._retry_for_s is not None and waited >= self._retry_for_s:
                    raise
                if self._closing and waited >= self._close_timeout_s:
                    raise
                # The database logs its own outage once; this is one retry of many.
                log.debug("database write failed (%s); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 1.0)
                now = loop.time()
                late = [i for i in batch if isinstance(i, _Submit) and _past(i, now)]
                if late:
                    self._fail(late, StoreUnavailable(str(exc)))
                    batch = [i for i in batch if not (isinstance(i, _Submit) and _past(i, now))]
                    if not batch:
                        return batch, [], []

    async def _one_by_one(
        self, batch: list[_Item], attempts: dict[str, int]
    ) -> tuple[list[Any], list[Published]]:
        outcomes: list[Any] = []
        emitted: list[Published] = []
        for item in batch:
            try:
                _written, result, produced = await self._store([item], attempts)
                outcomes.extend(result or [StoreUnavailable("the database is away")])
                emitted.extend(produced)
            except Exception as exc:
                log.error("a write failed: %s: %s", type(exc).__name__, exc)
                outcomes.append(exc if isinstance(exc, StoreError) else StoreError(str(exc)))
        return outcomes, emitted

    async def _deliver(
        self, batch: list[_Item], outcomes: list[Any], emitted: list[Published]
    ) -> None:
        if emitted:
            try:
                await self._publish(emitted)
            except Exception as exc:
                # Stored is what counts; subscribers catch up by resuming from the store.
                self._publishing.failed(f"{len(emitted)} event(s): {exc}")
            else:
                self._publishing.succeeded()
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.done.done():
                continue
            if isinstance(outcome, BaseException):
                item.done.set_exception(outcome)
                item.done.exception()  # retrieved: the caller may be gone
            else:
                item.done.set_result(outcome)
        if self._observe is not None and emitted:
            try:
                self._observe([event for event, _payload in emitted])
            except Exception:
                log.exception("an event observer failed")

    @staticmethod
    def _fail(items: Sequence[_Item], error: BaseException) -> None:
        for item in items:
            if not item.done.done():
                item.done.set_exception(error)
                item.done.exception()


def _past(item: _Submit, now: float) -> bool:
    return item.deadline is not None and now >= item.deadline


# -- one transaction ------------------------------------------------------------------------------


def _apply(
    sql: Sql, batch: Sequence[_Item], attempts: dict[str, int]
) -> tuple[list[Any], list[Published]]:
    """Write ``batch`` in order; returns each item's outcome and the events to publish.

    Runs on the database's writing thread (SQLite) or inside ``run_sync`` (PostgreSQL).
    """
    outcomes: list[Any] = [None] * len(batch)
    emitted: list[Published] = []
    run: list[int] = []  # indexes of consecutive _Emit items not yet written
    for index, item in enumerate(batch):
        if isinstance(item, _Emit):
            run.append(index)
            continue
        _write_events(sql, batch, run, attempts, outcomes, emitted)
        run = []
        produced: list[Event] = []
        try:
            outcomes[index] = item.op.apply(sql, produced)
        except RequestError as exc:
            outcomes[index] = exc
        emitted.extend((event, event.to_json()) for event in produced)
    _write_events(sql, batch, run, attempts, outcomes, emitted)
    return outcomes, emitted


def _write_events(
    sql: Sql,
    batch: Sequence[_Item],
    indexes: list[int],
    attempts: dict[str, int],
    outcomes: list[Any],
    emitted: list[Published],
) -> None:
    if not indexes:
        return
    items = [batch[i] for i in indexes]
    last_seq: dict[str, int] = {}
    for item in items:
        assert isinstance(item, _Emit)
        ev = item.event
        last_seq[ev.run_id] = max(last_seq.get(ev.run_id, 0), ev.seq)
    fenced = _update_last_seq(sql, last_seq, attempts)
    kept: list[_Emit] = []
    for index, item in zip(indexes, items, strict=True):
        assert isinstance(item, _Emit)
        if item.event.run_id in fenced:
            outcomes[index] = FencedError(item.event.run_id, attempts.get(item.event.run_id, -1))
        else:
            kept.append(item)
    if not kept:
        return
    sql.many(
        S.INSERT_EVENT,
        (
            {
                "run_id": i.event.run_id,
                "seq": i.event.seq,
                "type": i.event.type.value,
                "body": i.payload.decode(),
            }
            for i in kept
        ),
    )
    _mark_runs(sql, [i.event for i in kept])
    emitted.extend((i.event, i.payload) for i in kept)


def _mark_runs(sql: Sql, events: list[Event]) -> None:
    """The run and thread rows the stored ``events`` change, in lifecycle order. A run's
    ``input_requested`` is committed before anything after it is emitted, so a batch may hold
    its ``input_received`` followed by its next ``input_requested``, never the reverse, nor an
    ``input_requested`` followed by the terminal event."""
    started = [{"run_id": e.run_id, "ts": e.ts} for e in events if _is(e, EventType.AGENT_STARTED)]
    if started:
        sql.many(S.MARK_STARTED, started)
    resumed = [{"run_id": e.run_id} for e in events if _is(e, EventType.INPUT_RECEIVED)]
    if resumed:
        sql.many(S.MARK_RESUMED, resumed)
    waiting = [
        {"run_id": e.run_id, "request": dumps(e.data).decode()}
        for e in events
        if _is(e, EventType.INPUT_REQUESTED)
    ]
    if waiting:
        sql.many(S.MARK_WAITING, waiting)
    finished = [e for e in events if e.terminal]
    if not finished:
        return
    sql.many(S.MARK_FINISHED, [finish_params(e) for e in finished])
    sql.many(S.TOUCH_THREAD, [{"thread_id": e.thread_id, "ts": e.ts} for e in finished])
    # The thread's new state is saved with the agent_completed that carries it, or not at all.
    states = [
        {"thread_id": e.thread_id, "user_id": e.user_id, "state": e.thread_state.decode()}
        for e in finished
        if e.thread_state is not None and e.type is EventType.AGENT_COMPLETED
    ]
    if states:
        sql.many(S.SAVE_STATE, states)


def _is(event: Event, type_: EventType) -> bool:
    return event.type is type_


def _update_last_seq(sql: Sql, last_seq: dict[str, int], attempts: dict[str, int]) -> set[str]:
    """Move each run's ``last_seq``; returns the fenced-out runs (their attempt moved on)."""
    plain = [{"run_id": r, "seq": s} for r, s in last_seq.items() if r not in attempts]
    if plain:
        sql.many(S.SET_LAST_SEQ, plain)
    owned = sorted((r, attempts[r], s) for r, s in last_seq.items() if r in attempts)
    if not owned:
        return set()
    if sql.dialect == "postgresql":
        # One statement for every owned run; the row locks it takes are released at commit.
        rows = sql.all(
            S.SET_LAST_SEQ_FENCED_MANY,
            {
                "run_ids": [r for r, _a, _s in owned],
                "attempts": [a for _r, a, _s in owned],
                "seqs": [s for _r, _a, s in owned],
            },
        )
        kept = {row[0] for row in rows}
        return {r for r, _a, _s in owned} - kept
    fenced = set()
    for run_id, attempt, seq in owned:
        params = {"run_id": run_id, "attempt": attempt, "seq": seq}
        if sql.execute(S.SET_LAST_SEQ_FENCED, params) != 1:
            fenced.add(run_id)
    return fenced
