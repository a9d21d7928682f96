"""Runs on several processes: admission through PostgreSQL and the Redis run queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from corral.bus.queue import RedisRunQueue
from corral.bus.redis import RedisEventBus
from corral.core.context import UserExecutionContext
from corral.core.factory import ExecutionEngineFactory
from corral.core.registry import AgentRegistry
from corral.errors import QueueFullError
from corral.server.service import RunRequest, RunService
from corral.store.cluster import ClusterStore
from corral.store.runs import RunRecord
from corral.store.writer import EventWriter
from corral.worker import Worker, cancel_message

log = logging.getLogger("corral.cluster")


class ClusterRunService(RunService):
    """Like :class:`RunService`, but a run is stored ``queued`` and put on the shared queue;
    any worker of the cluster executes it. Cancellation reaches it wherever it runs."""

    def __init__(
        self,
        store: ClusterStore,
        factory: ExecutionEngineFactory,
        writer: EventWriter,
        registry: AgentRegistry,
        *,
        bus: RedisEventBus,
        queue: RedisRunQueue,
        worker: Worker | None,
    ) -> None:
        super().__init__(store, factory, writer, registry)
        self.cluster_store = store
        self.bus = bus
        self.queue = queue
        self.worker = worker if worker is not None and worker.executes else None

    async def _admit(
        self,
        context: UserExecutionContext,
        agent: str,
        request: RunRequest,
        idempotency: tuple[str, str] | None,
    ) -> tuple[RunRecord, bool]:
        limit = self.factory.limits.max_queued_per_user
        if await self.cluster_store.queued_count(context.user_id) >= limit:
            raise QueueFullError(context.user_id, limit)
        record, created = await self._create(context, agent, request, idempotency)
        if created:
            try:
                await self.queue.enqueue(record.run_id)
            except Exception as exc:  # stored as queued: the workers' sweep dispatches it
                log.warning("could not enqueue (%s); the sweep will", type(exc).__name__)
        return record, created

    async def _cancel_active(self, user_id: str, run_id: str, reason: str) -> bool:
        event = await self.cluster_store.cancel_queued(user_id, run_id, reason)
        if event is not None:
            with contextlib.suppress(Exception):
                await self.bus.publish(event, event.to_json())
            return True
        if await self.cluster_store.request_cancel(user_id, run_id, reason):
            # The broadcast is fast; the recorded reason is the fallback the lease renewal reads.
            with contextlib.suppress(Exception):
                await self.bus.publish_control(cancel_message(run_id, reason))
            return True
        return False

    async def _settled(self, run_id: str, timeout_s: float) -> None:
        """Wait (bounded) until the run — on whichever worker — is finished in the store."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if await self.cluster_store.is_finished(run_id):
                return
            await asyncio.sleep(0.05)

    async def drain(self, grace_s: float) -> None:
        self.accepting = False
        if self.worker is not None:
            await self.worker.stop(grace_s)
