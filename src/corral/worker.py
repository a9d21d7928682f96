"""A worker: takes runs from the cluster's queue and executes them under a lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from corral.bus.queue import RedisRunQueue
from corral.bus.redis import RedisEventBus
from corral.core.context import UserExecutionContext, new_id
from corral.core.factory import ExecutionEngineFactory
from corral.store.cluster import Claim, ClusterStore
from corral.store.runs import RunRecord
from corral.store.writer import EventWriter

log = logging.getLogger("corral.worker")

CANCEL_PREFIX = b"cancel\n"


class Worker:
    """Claims queued runs (PostgreSQL decides), executes them, heartbeats their leases.

    Loops, all started by :meth:`run` and stopped by :meth:`stop`:
    consume (Redis Stream → claim → execute), heartbeat (renew leases; a lost lease or a
    recorded cancellation stops the local run), reap (end runs whose lease expired anywhere
    as ``interrupted``) and sweep (re-dispatch queued runs the stream may have lost).
    """

    def __init__(
        self,
        *,
        store: ClusterStore,
        writer: EventWriter,
        bus: RedisEventBus,
        queue: RedisRunQueue,
        factory: ExecutionEngineFactory,
        lease_s: float = 10.0,
        capacity: int | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.bus = bus
        self.queue = queue
        self.factory = factory
        self.lease_s = lease_s
        self.capacity = capacity or factory.limits.max_running_total
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{new_id('w')[2:10]}"
        self._running: dict[str, tuple[str, int, asyncio.Task[None]]] = {}
        self._slot_freed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.executes = False

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self, *, execute: bool = True) -> None:
        """Start the loops; with ``execute=False`` only the reaper (an API-only node still
        ends the runs of dead workers, so a cluster without live workers never hangs)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._every(1.0, self._reap), name="reaper")]
        self.executes = execute
        if not execute:
            return
        self.bus.on_control = self._on_control
        self._tasks += [
            loop.create_task(self._consume(), name="worker-consume"),
            loop.create_task(self._every(self.lease_s / 3, self._heartbeat), name="heartbeat"),
            loop.create_task(self._every(2.0, self._sweep), name="sweeper"),
        ]

    async def stop(self, grace_s: float) -> None:
        """Take no more runs; let running ones finish within ``grace_s``; interrupt the rest."""
        self._stopping = True
        self._slot_freed.set()
        tasks = [t for _u, _a, t in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        for _user, _attempt, task in list(self._running.values()):
            task.cancel()
        leftovers = [t for _u, _a, t in self._running.values()]
        if leftovers:
            await asyncio.wait(leftovers, timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- loops ----------------------------------------------------------------------------------

    async def _every(self, interval: float, step: Any) -> None:
        while not self._stopping:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "%s failed: %s: %s",
                    step.__name__,
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "",
                )
            await asyncio.sleep(interval)

    async def _consume(self) -> None:
        await self._retrying(self.queue.ensure_group)
        since_reclaim = 0.0
        while not self._stopping:
            free = self.capacity - len(self._running)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                messages = await self.queue.read(self.worker_id, min(free, 32), block_ms=500)
                since_reclaim += 0.5 if not messages else 0.0
                if since_reclaim >= 5:
                    since_reclaim = 0.0
                    messages += await self.queue.reclaim(
                        self.worker_id, min_idle_ms=int(self.lease_s * 2000)
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("run queue unavailable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for msg_id, run_id in messages:
                if self._stopping:
                    break
                try:
                    await self._take(run_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # database down: leave it pending, reclaimed later
                    log.warning("could not claim a run (%s)", type(exc).__name__)
                    continue
                with contextlib.suppress(Exception):
                    await self.queue.ack(msg_id)

    async def _take(self, run_id: str) -> None:
        if run_id in self._running:
            return
        result = await self.store.claim(
            run_id,
            self.worker_id,
            lease_s=self.lease_s,
            max_running_per_user=self.factory.limits.max_running_per_user,
        )
        if result.outcome is Claim.CLAIMED and result.run is not None:
            run = result.run
            task = asyncio.get_running_loop().create_task(self._execute(run), name=f"run {run_id}")
            self._running[run_id] = (run.user_id, run.attempt, task)

    async def _execute(self, run: RunRecord) -> None:
        context = UserExecutionContext(
            user_id=run.user_id, thread_id=run.thread_id, run_id=run.run_id
        )
        self.writer.fence(run.run_id, run.attempt)
        try:
            lease = self.factory.engine_for(context, self.writer, timeout_s=run.timeout_s)
            async with lease as engine:
                await engine.run(run.agent, run.input)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "run ended without its terminal event here (%s)",
                type(exc).__name__,
                extra={"user_id": run.user_id, "run_id": run.run_id},
            )
        finally:
            self._running.pop(run.run_id, None)
            self.writer.unfence(run.run_id)
            self._slot_freed.set()
            if not self._stopping:
                asyncio.get_running_loop().create_task(self._sweep_quietly())

    async def _heartbeat(self) -> None:
        leases = {run_id: attempt for run_id, (_u, attempt, _t) in self._running.items()}
        if not leases:
            return
        lost, cancels = await self.store.renew(leases, self.lease_s)
        for run_id in lost:
            entry = self._running.get(run_id)
            if entry is not None:
                log.warning("lease lost; stopping the run here", extra={"run_id": run_id})
                self.factory.cancel(entry[0], run_id, "the worker lost its lease")
        for run_id, reason in cancels.items():
            entry = self._running.get(run_id)
            if entry is not None:
                self.factory.cancel(entry[0], run_id, reason)

    async def _reap(self) -> None:
        for event in await self.store.reap_expired("the worker running it stopped responding"):
            log.warning("interrupted a run whose lease expired", extra={"run_id": event.run_id})
            with contextlib.suppress(Exception):
                await self.bus.publish(event, event.to_json())

    async def _sweep(self) -> None:
        if self._stopping or len(self._running) >= self.capacity:
            return
        for run_id in await self.store.dispatchable(self.factory.limits.max_running_per_user):
            await self.queue.enqueue(run_id)

    async def _sweep_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self._sweep()

    def _on_control(self, message: bytes) -> None:
        if not message.startswith(CANCEL_PREFIX):
            return
        fields = message[len(CANCEL_PREFIX) :].decode(errors="replace").split("\n", 1)
        if len(fields) != 2:
            return
        run_id, reason = fields
        entry = self._running.get(run_id)
        if entry is not None:
            self.factory.cancel(entry[0], run_id, reason)

    async def _retrying(self, step: Any) -> None:
        delay = 0.2
        while True:
            try:
                await step()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s failed (%s); retrying", step.__name__, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


def cancel_message(run_id: str, reason: str) -> bytes:
    return CANCEL_PREFIX + f"{run_id}\n{reason}".encode()


__all__ = ["Worker", "cancel_message"]
