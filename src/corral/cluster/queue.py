"""The cluster's run queue: the database is the queue, Redis only wakes workers up.

Runs are stored ``queued``; a worker claims them in a PostgreSQL transaction
(:class:`~corral.cluster.ops.ClaimRuns`) under a lease it renews. Every node — API-only ones
too — reaps runs whose lease expired, so a cluster never waits on a dead worker. Redis carries
hints only ("there is work", "cancel this run", "this run's question is answered"): a worker
also looks for work every ``poll_s`` and reads recorded cancellations and stored answers with
its lease renewals, so a lost message, or a Redis restart, delays a run by a moment and loses
nothing.

A run waiting for input keeps its lease (a dead worker's waiting run is reaped like a running
one). Its answer is stored by whichever API node received it; the worker executing the run
reads it from the store, then takes a running slot back with
:class:`~corral.store.inputs.ResumeRun`, within its user's limit across the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from corral.cluster.bus import RedisEventBus
from corral.cluster.ops import ClaimRuns, ReapExpired, RenewLeases, RequestCancel, run_counts
from corral.core.admission import Limits
from corral.core.events import RunStatus
from corral.errors import FencedError
from corral.outage import Outage
from corral.runs.queue import Claim, Executor, Renewal
from corral.store.inputs import ResumeRun
from corral.store.ops import CancelQueued
from corral.store.reads import Reads
from corral.store.records import RunRecord
from corral.store.writer import EventWriter

log = logging.getLogger("corral.cluster.queue")

WORK = b"work"
CANCEL = b"cancel\n"
MEMBER = b"member\n"  # + b"joined\n" or b"left\n" + the worker id
ANSWER = b"answer\n"
REAP_EVERY_S = 1.0
POLL_S = 1.0
SETTLE_POLL_S = 0.05
REQUEST_S = 3.0  # a request's write waits this long for the database, then is a 503


class ClusterRunQueue:
    """One node's handle on the cluster's queue. ``async with`` starts its reaper and its
    listener on the bus's control channel; leaving stops them."""

    def __init__(
        self,
        *,
        writer: EventWriter,
        reads: Reads,
        bus: RedisEventBus,
        limits: Limits,
        lease_s: float,
        owner: str,
        poll_s: float = POLL_S,
    ) -> None:
        self._writer = writer
        self._reads = reads
        self._bus = bus
        self._limits = limits
        self._lease_s = lease_s
        self._owner = owner
        self._poll_s = poll_s
        self._work = asyncio.Event()
        self._resuming: set[asyncio.Event] = set()  # woken when a slot may be free
        self._executor: Executor | None = None
        self._wake_pending = False
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()  # wake-ups in flight (kept referenced)
        self._reaping = Outage(log, "reaping expired leases failed", "reaping works again")
        self._signalling = Outage(
            log,
            "could not publish to Redis; workers still poll for work every second",
            "publishing to Redis works again",
        )

    async def __aenter__(self) -> ClusterRunQueue:
        self._bus.on_control(self._on_control)
        self._tasks.append(asyncio.get_running_loop().create_task(self._reap(), name="reaper"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._executor is not None:
            log.info("worker %s leaves the cluster", self._owner, extra={"worker_id": self._owner})
            self._send(MEMBER + b"left\n" + self._owner.encode())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._sends, return_exceptions=True)

    @property
    def lease_s(self) -> float | None:
        return self._lease_s

    @property
    def admits_locally(self) -> bool:
        return False

    def attach(self, executor: Executor) -> None:
        """This node's worker; every node of the cluster logs that it joined."""
        self._executor = executor
        log.info("worker %s joins the cluster", self._owner, extra={"worker_id": self._owner})
        self._send(MEMBER + b"joined\n" + self._owner.encode())

    async def submit(self, run: RunRecord) -> None:
        self._wake_everyone()

    async def claim(self, limit: int) -> list[Claim]:
        # One look, then one wait: the worker asks again with its room counted afresh (a
        # resumed run may have taken some meanwhile).
        self._work.clear()
        runs = await self._writer.submit(ClaimRuns(self._owner, limit, self._lease_s, self._limits))
        if runs:
            return [Claim(run, fenced=True) for run in runs]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), self._poll_s)
        return []

    def finished(self, claim: Claim) -> None:
        # Its slot and its thread are free: a queued run somewhere may start now.
        self._wake_everyone()

    def suspend(self, claim: Claim) -> None:
        # Its input_requested is stored (status waiting): its slot is free for the cluster.
        self._wake_everyone()

    async def resume(self, claim: Claim) -> None:
        run = claim.run
        per_user = self._limits.max_running_per_user
        woken = asyncio.Event()
        self._resuming.add(woken)
        try:
            while True:
                woken.clear()
                resumed = await self._writer.submit(
                    ResumeRun(run.run_id, run.user_id, run.attempt, per_user)
                )
                if resumed == "resumed":
                    return
                if resumed == "gone":
                    raise FencedError(run.run_id, run.attempt)
                # Its user is at the limit: again when a run ends anywhere (or after poll_s).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), self._poll_s)
        finally:
            self._resuming.discard(woken)

    async def answered(self, run: RunRecord) -> None:
        # The answer is stored; this only saves the executing worker its next lease renewal.
        try:
            await self._bus.publish_control(ANSWER + run.run_id.encode())
        except Exception as exc:
            log.warning("answer broadcast failed (%s); the lease renewal carries it", exc)

    async def cancel(self, user_id: str, run_id: str, reason: str) -> bool:
        cancelled = self._writer.submit(CancelQueued(user_id, run_id, reason), within_s=REQUEST_S)
        if await cancelled is not None:
            return True
        requested = self._writer.submit(RequestCancel(user_id, run_id, reason), within_s=REQUEST_S)
        if not await requested:
            return False
        # The broadcast is fast; the recorded reason is what the lease renewal reads.
        try:
            await self._bus.publish_control(CANCEL + f"{run_id}\n{reason}".encode())
        except Exception as exc:
            log.warning("cancel broadcast failed (%s); the lease renewal carries it", exc)
        return True

    async def renew(self, claims: Sequence[Claim]) -> Renewal:
        leases = [(c.run.run_id, c.run.attempt) for c in claims]
        lost, cancels, answered = await self._writer.submit(RenewLeases(leases, self._lease_s))
        return Renewal(frozenset(lost), cancels, frozenset(answered))

    async def wait_settled(self, run_id: str, timeout_s: float) -> None:
        """Poll the store (the run may execute on any node) until it is finished."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            status = await self._reads.run_status(run_id)
            if status is None or RunStatus(status).finished:
                return
            await asyncio.sleep(SETTLE_POLL_S)

    async def counts(self) -> tuple[int, int]:
        return await self._reads.db.read(run_counts)

    # -- internals ------------------------------------------------------------------------------

    def _wake_everyone(self) -> None:
        """Tell every worker there may be work; one message per loop turn, however many runs."""
        self._work.set()
        self._wake_resuming()
        if self._wake_pending:
            return
        self._wake_pending = True
        asyncio.get_running_loop().call_soon(self._send_wake)

    def _wake_resuming(self) -> None:
        for woken in self._resuming:
            woken.set()

    def _send_wake(self) -> None:
        self._wake_pending = False
        self._send(WORK)

    def _send(self, message: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._bus.publish_control(message))
        self._sends.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sends.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            self._signalling.failed(task.exception())
        else:
            self._signalling.succeeded()

    def _on_control(self, message: bytes) -> None:
        if message == WORK:
            self._work.set()
            self._wake_resuming()
        elif message.startswith(CANCEL) and self._executor is not None:
            run_id, _, reason = message[len(CANCEL) :].decode(errors="replace").partition("\n")
            self._executor.cancel(run_id, reason)
        elif message.startswith(MEMBER):
            change, _, worker_id = message[len(MEMBER) :].decode(errors="replace").partition("\n")
            if worker_id != self._owner:  # this node logged its own change already
                log.info("cluster: worker %s %s", worker_id, change, extra={"worker_id": worker_id})
        elif message.startswith(ANSWER) and self._executor is not None:
            self._executor.answered(message[len(ANSWER) :].decode(errors="replace"))

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            try:
                reaped = await self._writer.submit(
                    ReapExpired("the worker running it stopped responding")
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._reaping.failed(exc)
                continue
            self._reaping.succeeded()
            for run in reaped:
                log.warning(
                    "lease lost: worker %s stopped renewing it; the run ends as interrupted",
                    run.owner or "?",
                    extra={"user_id": run.user_id, "run_id": run.run_id, "worker_id": run.owner},
                )
            if reaped:
                self._wake_everyone()
