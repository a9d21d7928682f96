"""Group commit: events are stored in batches, then delivered — never the other way round."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from corral.core.events import Event, EventType, dumps, terminal_status
from corral.errors import FencedError, StoreError
from corral.store.models import EventRow, RunRow

log = logging.getLogger("corral.store.writer")

Publish = Callable[[Event, bytes], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    event: Event
    payload: bytes
    done: asyncio.Future[None]


# Deadlock detected, serialization failure: the transaction lost a race; run it again.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def database_away(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying: the database could not be reached, or the
    transaction lost a race (deadlock, serialization) and will succeed when run again."""
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return bool(exc.connection_invalidated) or sqlstate in RETRYABLE_SQLSTATES


class EventWriter:
    """The app's one event sink: ``emit`` → stored (one transaction per batch) → published.

    ``emit`` is synchronous up to acceptance (the event's place in line is fixed when it is
    called) and returns a future that resolves once the event is committed *and* handed to
    the bus. A caller cancelled while waiting loses nothing: the writer still stores and
    publishes the event. The run row follows its events in the same transaction (status,
    ``started_at``, output or error, ``finished_at``, ``last_seq``). A failing database is
    retried with backoff — by default until it answers again, since a dropped batch would
    leave a gap in its runs' ``seq``; the emitting runs wait meanwhile (backpressure), and
    their own deadlines still apply. With ``retry_for_s`` set, a batch that still fails after
    that long is refused (its emitters get :class:`StoreError`) and nothing of it published.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        publish: Publish,
        *,
        max_batch: int = 1024,
        max_backlog: int = 1024,
        retry_for_s: float | None = None,
        close_timeout_s: float = 15.0,
        on_committed: Callable[[list[Event]], None] | None = None,
    ) -> None:
        self._engine = engine
        self._publish = publish
        self._max_batch = max_batch
        self._retry_for_s = retry_for_s
        self._close_timeout_s = close_timeout_s
        self._on_committed = on_committed
        self._pending: list[_Pending] = []
        self._max_backlog = max_backlog
        self._accepted: asyncio.Future[None] | None = None  # a done future, reused
        self._attempts: dict[str, int] = {}  # run_id -> attempt, for fenced writers
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> EventWriter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-writer")

    def emit(self, event: Event) -> asyncio.Future[None]:
        """Accept ``event``; the returned future resolves when the emitter may go on.

        Pipelined: a run does not wait for each event's commit — that would allow one event
        per run per commit — but only for its terminal event (so a finished run is stored
        when its engine returns) and whenever the backlog is over ``max_backlog`` (the
        backpressure). Delivery still always follows the commit.
        """
        if self._closing:
            raise StoreError("the event writer is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append(_Pending(event, event.to_json(), done))
        self._wakeup.set()
        if event.terminal or len(self._pending) > self._max_backlog:
            return done
        if self._accepted is None:
            self._accepted = loop.create_future()
            self._accepted.set_result(None)
        return self._accepted

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
            log.error("closing with %d event(s) not stored: the database is away", self.backlog)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            for item in self._pending:
                if not item.done.done():
                    item.done.set_exception(StoreError("the server stopped before storing it"))
                    item.done.exception()
            self._pending.clear()

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
            try:
                fenced = await self._store(batch)
            except Exception as exc:
                log.error("could not store %d event(s): %s", len(batch), type(exc).__name__)
                error = StoreError(f"the database did not store the events: {exc}")
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(error)
                        item.done.exception()  # mark retrieved: the emitter may be gone
                continue
            if fenced:
                log.warning("refused events of %d run(s) this process no longer owns", len(fenced))
                kept = []
                for item in batch:
                    if item.event.run_id in fenced:
                        if not item.done.done():
                            attempt = self._attempts.get(item.event.run_id, -1)
                            item.done.set_exception(FencedError(item.event.run_id, attempt))
                            item.done.exception()
                    else:
                        kept.append(item)
                batch = kept
            for item in batch:
                try:
                    await self._publish(item.event, item.payload)
                except Exception:
                    # Stored is what counts; subscribers catch up by resume.
                    log.warning("publish failed", extra={"run_id": item.event.run_id})
                if not item.done.done():
                    item.done.set_result(None)
            if self._on_committed is not None:
                self._on_committed([item.event for item in batch])

    async def _store(self, batch: list[_Pending]) -> set[str]:
        delay, waited = 0.05, 0.0
        while True:
            try:
                return await self._write(batch)
            except Exception as exc:
                # The database is away (refused, dropped, timed out): wait for it. Anything
                # else (a constraint) would fail again the same way, so it is not retried.
                if not database_away(exc):
                    raise
                if self._retry_for_s is not None and waited >= self._retry_for_s:
                    raise
                log.warning("database write failed; retrying in %.2f s", delay)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 1.0)

    async def _write(self, batch: list[_Pending]) -> set[str]:
        """One transaction for the batch; returns the fenced-out run ids (nothing written)."""
        last_seq: dict[str, int] = {}
        started: list[dict[str, Any]] = []
        finished: list[dict[str, Any]] = []
        for item in batch:
            ev = item.event
            last_seq[ev.run_id] = max(last_seq.get(ev.run_id, 0), ev.seq)
            if ev.type is EventType.AGENT_STARTED:
                started.append({"b_run": ev.run_id, "b_ts": ev.ts})
            elif ev.terminal:
                status = terminal_status(ev.type, ev.data)
                output = ev.data.get("output") if ev.type is EventType.AGENT_COMPLETED else None
                error = ev.data.get("error")
                if ev.type is EventType.AGENT_CANCELLED:
                    error = {"type": "cancelled", "message": str(ev.data.get("reason", ""))}
                finished.append(
                    {
                        "b_run": ev.run_id,
                        "b_status": status.value,
                        "b_output": None if output is None else dumps(output).decode(),
                        "b_error": None if error is None else dumps(error).decode(),
                        "b_ts": ev.ts,
                    }
                )
        fenced: set[str] = set()
        async with self._engine.begin() as conn:
            plain = []
            # Rows are locked in run_id order, as the lease renewal does: no deadlock.
            for run, seq in sorted(last_seq.items()):
                attempt = self._attempts.get(run)
                if attempt is None:
                    plain.append({"b_run": run, "b_seq": seq})
                    continue
                # Row-locks the run until commit: a reaper cannot slip in between.
                result = await conn.execute(
                    update(RunRow)
                    .where(RunRow.run_id == run, RunRow.attempt == attempt)
                    .values(last_seq=seq)
                )
                if getattr(result, "rowcount", 0) != 1:
                    fenced.add(run)
            if plain:
                await conn.execute(
                    update(RunRow)
                    .where(RunRow.run_id == bindparam("b_run"))
                    .values(last_seq=bindparam("b_seq")),
                    plain,
                )
            event_rows = [
                {
                    "run_id": item.event.run_id,
                    "seq": item.event.seq,
                    "type": item.event.type.value,
                    "body": item.payload.decode(),
                }
                for item in batch
                if item.event.run_id not in fenced
            ]
            if event_rows:
                await conn.execute(insert(EventRow), event_rows)
            started = [s for s in started if s["b_run"] not in fenced]
            finished = [f for f in finished if f["b_run"] not in fenced]
            if started:
                await conn.execute(
                    update(RunRow)
                    .where(RunRow.run_id == bindparam("b_run"))
                    .values(status="running", started_at=bindparam("b_ts")),
                    started,
                )
            if finished:
                await conn.execute(
                    update(RunRow)
                    .where(RunRow.run_id == bindparam("b_run"))
                    .values(
                        status=bindparam("b_status"),
                        output=bindparam("b_output"),
                        error=bindparam("b_error"),
                        finished_at=bindparam("b_ts"),
                    ),
                    finished,
                )
        return fenced
