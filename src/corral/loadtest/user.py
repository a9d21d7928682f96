"""A simulated user: its connections, its runs, their latencies, and its final verification."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

import orjson

from corral.client import AsyncClient, CorralAPIError
from corral.loadtest.connection import Shared, Slot, SlotState
from corral.loadtest.metrics import clock
from corral.loadtest.verify import CANARY_PREFIX, Kind

HTTP_RETRIES = 1  # a start lost in transport is sent once more (one idempotency key: safe)


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    via: str  # "http" or "ws"
    t0: float  # just before the request was sent


class SimulatedUser:
    """One user id with ``connections_per_user`` sockets, starting ``runs_per_user`` runs.

    Runs alternate between ``POST /v1/runs`` and a WebSocket ``start_run`` (the first one
    depends on the user's index, so both routes are used from the start). A run counts as
    complete when its terminal event has reached every connection of the user; its start
    latency ends when the first connection receives ``agent_started``.

    Events of a run may arrive before the response that names the run (a fast run can finish
    before its ``POST`` returns), so arrival times are kept by run id and matched afterwards.
    """

    def __init__(self, index: int, user_id: str, token: str, shared: Shared) -> None:
        self.index = index
        self.user_id = user_id
        self.token = token
        self.canary = CANARY_PREFIX + secrets.token_hex(12)
        # Idempotency keys (client_ref, Idempotency-Key: one key space) are unique per
        # invocation too: a rerun with the same --user-prefix must not meet its earlier keys.
        self._keys = f"{user_id}/{secrets.token_hex(4)}"
        self.runs: dict[str, RunRecord] = {}
        self._shared = shared
        self._config = shared.config
        self._stats = shared.stats
        # corral.client over the runner's shared connection pool, as this user.
        self._api = AsyncClient(
            shared.config.base_url, token=token, http=shared.http, retries=HTTP_RETRIES
        )
        self._agent_started: dict[str, float] = {}
        self._outcomes: dict[str, str] = {}
        self._accepts: dict[str, asyncio.Future[dict[str, object] | str | None]] = {}
        self._waiters: dict[str, asyncio.Future[float | None]] = {}
        self.slots = [Slot(self, n, shared) for n in range(shared.config.connections_per_user)]

    # -- phases -------------------------------------------------------------------------------

    async def connect(self) -> bool:
        """Open every connection at once; True when at least one is ready."""
        opened = await asyncio.gather(*(slot.open() for slot in self.slots))
        if any(opened):
            self._stats.users_connected += 1
        return any(opened)

    async def drive(self) -> None:
        """Start the user's runs, ``in_flight`` at a time, each waited for until complete."""
        gate = asyncio.Semaphore(self._config.in_flight)

        async def one(k: int) -> None:
            async with gate:
                await self._run(k)

        await asyncio.gather(*(one(k) for k in range(self._config.runs_per_user)))

    async def settle(self) -> None:
        """Wait until every connection has received all that the server queued for it."""
        await asyncio.gather(*(slot.settle() for slot in self.slots if slot.counts))
        self._stats.users_done += 1

    async def close(self) -> None:
        await asyncio.gather(*(slot.close() for slot in self.slots))

    async def verify(self) -> None:
        """Report what each connection missed, and every run a connection got that is not ours.

        A run id the user does not know is confirmed over HTTP before it is called foreign:
        a ``POST`` whose response was lost may still have created a run of this user.
        """
        expected = self._config.expected_events
        unknown: dict[str, list[Slot]] = {}
        for slot in self.slots:
            self._stats.duplicates += slot.verifier.duplicates
            self._stats.duplicates_tolerated += slot.verifier.duplicates_tolerated
            if not slot.ever_opened:
                continue
            if slot.state is SlotState.FAILED:
                slot.verifier.connection_lost(len(self.runs))
                continue
            for run_id in slot.verifier.finish(self.runs, expected):
                unknown.setdefault(run_id, []).append(slot)
        for run_id, slots in unknown.items():
            if await self._is_foreign(run_id):
                for slot in slots:
                    self._shared.violations.add(
                        Kind.FOREIGN_RUN,
                        f"{slot.label}: received events of run {run_id}, which is not this "
                        "user's (GET /v1/runs/{id} answers 404)",
                    )

    # -- runs ---------------------------------------------------------------------------------

    async def _run(self, k: int) -> None:
        config, stats = self._config, self._stats
        given = config.run_input(self.canary, k)
        body: dict[str, object] = {"agent": config.agent, "input": given}
        via = "http" if (k + self.index) % 2 == 0 else "ws"
        t0 = clock()
        run_id = await (
            self._start_http(given, k) if via == "http" else self._start_ws(k, body, given)
        )
        if run_id is None:
            return
        record = RunRecord(run_id, via, t0)
        self.runs[run_id] = record
        stats.run_started(t0)
        for slot in self.slots:
            # A socket that reconnected after the run began may have missed its first events.
            if slot.state is SlotState.OPEN and slot.connected_since > t0:
                await slot.resume(run_id)
        done = await self._wait_done(run_id)
        if done is None:
            return
        outcome = self._outcomes.get(run_id, "unknown")
        stats.run_completed(t0, self._agent_started.get(run_id), done, outcome)
        if outcome != "agent_completed":
            stats.error(f"run:{outcome}")

    async def _start_http(self, given: dict[str, object], k: int) -> str | None:
        """``POST /v1/runs`` through corral.client: a request lost in transport is retried
        once, safely — both carry one ``Idempotency-Key``, so the retry returns the run the
        first one may have made."""
        key = f"{self._keys}/{k}"
        try:
            run = await self._api.start_run(self._config.agent, given, idempotency_key=key)
        except CorralAPIError as exc:
            kind = exc.code if exc.status is None else f"{exc.status}:{exc.code}"
            self._stats.error(f"http:{kind}", f"POST /v1/runs of {self.user_id}: {exc}")
            return None
        run_id = _run_id(run)
        if run_id is None:
            self._stats.error("http:answer_without_run_id")
        return run_id

    async def _start_ws(
        self, k: int, body: dict[str, object], given: dict[str, object]
    ) -> str | None:
        stats = self._stats
        open_slots = [s for s in self.slots if s.state is SlotState.OPEN]
        if not open_slots:
            # Every socket of this user is down (dropped, reconnecting): start over HTTP, as
            # a client would; the sockets resume the run's events when they are back.
            stats.starts_over_http += 1
            return await self._start_http(given, k)
        slot = open_slots[k % len(open_slots)]
        ref = f"{self._keys}/{k}"
        accepted: asyncio.Future[dict[str, object] | str | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._accepts[ref] = accepted
        slot.refs.add(ref)
        try:
            message = {"type": "start_run", "client_ref": ref, **body}
            if not await slot.send(orjson.dumps(message)):
                accepted.set_result(LOST)  # the socket went as the start was sent
            try:
                run = await asyncio.wait_for(accepted, self._config.timeout_s)
            except TimeoutError:
                stats.error("timeout:run_accepted")
                return None
        finally:
            self._accepts.pop(ref, None)
            slot.refs.discard(ref)
        if run is None:
            return None  # the server's error message was counted when it arrived
        if run == LOST:
            # The socket went before run_accepted: the start may or may not have been made.
            # Retried over HTTP with the client_ref as Idempotency-Key (one key space): the
            # server answers with the run the first attempt made, or makes it — one run.
            stats.starts_retried += 1
            return await self._start_http(given, k)
        run_id = _run_id(run)
        if run_id is None:
            stats.error("ws:run_accepted_without_run_id")
        return run_id

    async def _wait_done(self, run_id: str) -> float | None:
        if not any(slot.counts for slot in self.slots):
            self._stats.error("run:no_connection_to_observe")
            return None
        done = self._done_at(run_id)
        if done is not None:
            return done
        waiter: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        self._waiters[run_id] = waiter
        try:
            done = await asyncio.wait_for(waiter, self._config.timeout_s)
        except TimeoutError:
            self._stats.error(
                "timeout:run_completion",
                f"run {run_id} of {self.user_id}: no terminal event on every connection "
                f"within {self._config.timeout_s:g} s",
            )
            return None
        finally:
            self._waiters.pop(run_id, None)
        if done is None:
            self._stats.error("run:no_connection_to_observe")
        return done

    def _done_at(self, run_id: str) -> float | None:
        """When the terminal event reached the last connection that must get it, or None."""
        last = 0.0
        for slot in self.slots:
            if not slot.counts:
                continue
            arrived = slot.terminals.get(run_id)
            if arrived is None:
                return None
            last = max(last, arrived)
        return last or None

    async def _is_foreign(self, run_id: str) -> bool:
        try:
            await self._api.get_run(run_id)
        except CorralAPIError as exc:
            if exc.status == 404:
                return True
            kind = exc.code if exc.status is None else f"{exc.status}:{exc.code}"
            self._stats.error(f"http:{kind}")
            return False
        self._stats.error("run:untracked_own_run")
        return False

    # -- called by the connections ------------------------------------------------------------

    def on_agent_started(self, run_id: str) -> None:
        if run_id not in self._agent_started:
            self._agent_started[run_id] = clock()

    def on_terminal(self, run_id: str, kind: str, now: float) -> None:
        self._outcomes.setdefault(run_id, kind)
        waiter = self._waiters.get(run_id)
        if waiter is not None and not waiter.done():
            done = self._done_at(run_id)
            if done is not None:
                waiter.set_result(done)

    def on_run_accepted(self, msg: dict[str, object]) -> None:
        ref = msg.get("client_ref")
        accepted = self._accepts.get(ref) if isinstance(ref, str) else None
        if accepted is None:
            self._stats.error("ws:unexpected_run_accepted")
            return
        run = msg.get("run")
        if not accepted.done():
            accepted.set_result(run if isinstance(run, dict) else None)

    def on_ws_error(self, msg: dict[str, object]) -> None:
        self._stats.error(f"ws_error:{msg.get('code')}", f"{self.user_id}: {msg}")
        ref = msg.get("client_ref")
        accepted = self._accepts.get(ref) if isinstance(ref, str) else None
        if accepted is not None and not accepted.done():
            accepted.set_result(None)

    def abandon_starts(self, refs: set[str]) -> None:
        """The socket that carried these ``start_run`` messages closed before accepting them:
        each start is retried with its key (see :meth:`_start_ws`)."""
        for ref in refs:
            accepted = self._accepts.get(ref)
            if accepted is not None and not accepted.done():
                accepted.set_result(LOST)

    def slot_failed(self, _slot: Slot) -> None:
        """A connection gave up: runs no longer wait for it (or for nothing, if none is left)."""
        observed = any(slot.counts for slot in self.slots)
        for run_id, waiter in list(self._waiters.items()):
            done = self._done_at(run_id)
            if not waiter.done() and (done is not None or not observed):
                waiter.set_result(done)


LOST = "lost"  # a start_run whose socket closed before its run_accepted


def _run_id(run: object) -> str | None:
    run_id = run.get("run_id") if isinstance(run, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None
