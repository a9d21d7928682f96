"""Putting the parts together: one function for an API node and for a worker process.

Single node (no Redis): an in-process bus, runs executed by this process, and at start the
runs a dead process left behind are ended as ``interrupted``. Cluster (Redis + PostgreSQL):
the Redis bus and run queue; runs go through the queue to whichever worker claims them, and
only expired leases — never other live processes' runs — are interrupted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from corral.bus.queue import RedisRunQueue
from corral.bus.redis import RedisEventBus
from corral.core.bus import EventBus, InProcessEventBus
from corral.core.context import UserExecutionContext
from corral.core.events import Event
from corral.core.factory import ExecutionEngineFactory, Limits
from corral.core.monitor import EventMonitor
from corral.core.registry import AgentRegistry
from corral.errors import ConfigurationError
from corral.metrics import Metrics
from corral.settings import Settings
from corral.store.cluster import ClusterStore
from corral.store.database import create_engine, is_sqlite, migrate
from corral.store.runs import RunStore
from corral.store.writer import EventWriter
from corral.worker import Worker

log = logging.getLogger("corral.assembly")


@dataclass
class Parts:
    settings: Settings
    registry: AgentRegistry
    store: RunStore
    bus: EventBus
    writer: EventWriter
    factory: ExecutionEngineFactory
    metrics: Metrics
    monitor: EventMonitor
    queue: Any = None  # RedisRunQueue in a cluster
    worker: Any = None  # Worker when this process executes cluster runs

    @property
    def clustered(self) -> bool:
        return self.queue is not None


def limits_of(settings: Settings) -> Limits:
    return Limits(
        max_running_per_user=settings.max_running_per_user,
        max_queued_per_user=settings.max_queued_per_user,
        max_running_total=settings.max_running_total,
        run_timeout_s=settings.run_timeout_s,
        tool_timeout_s=settings.tool_timeout_s,
    )


@contextlib.asynccontextmanager
async def open_parts(
    settings: Settings, registry: AgentRegistry, *, execute: bool = True
) -> AsyncIterator[Parts]:
    """Everything stateful below the HTTP layer, opened in order and closed in reverse."""
    clustered = bool(settings.redis_url)
    url = settings.resolved_database_url
    if clustered and is_sqlite(url):
        raise ConfigurationError(
            "several nodes (CORRAL_REDIS_URL) need PostgreSQL: set CORRAL_DATABASE_URL to "
            "postgresql+asyncpg://user@host/db"
        )
    if not clustered and not execute:
        raise ConfigurationError(
            "--no-executor makes an API-only node, which needs workers: set --redis-url "
            "(CORRAL_REDIS_URL) and a PostgreSQL database, and run `corral worker`"
        )
    registry.freeze()
    db = create_engine(url)
    reader = create_engine(url, readers=True) if is_sqlite(url) else db
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(db.dispose)
        if reader is not db:
            stack.push_async_callback(reader.dispose)
        for lifespan in registry.lifespans():
            await stack.enter_async_context(lifespan())
        await migrate(db)
        store: RunStore = ClusterStore(db, reader) if clustered else RunStore(db, reader)
        if not clustered:
            interrupted = await store.interrupt_unfinished(
                message="the server stopped before the run finished"
            )
            if interrupted:
                log.warning(
                    "ended %d run(s) of a previous process as interrupted", len(interrupted)
                )
            # At exit (after the writer drained): runs that did not finish within the grace
            # period, or were still queued, end as interrupted rather than stay "running".
            stack.push_async_callback(
                store.interrupt_unfinished,
                message="the server shut down before the run finished",
            )
        bus: EventBus
        queue: RedisRunQueue | None = None
        redis_bus: RedisEventBus | None = None
        if settings.redis_url:
            redis_bus = await RedisEventBus.connect(settings.redis_url)
            queue = RedisRunQueue(redis_bus.client)
            bus = redis_bus
        else:
            bus = InProcessEventBus()
        stack.push_async_callback(bus.close)
        metrics = Metrics()
        monitor = EventMonitor()

        def committed(events: list[Event]) -> None:
            metrics.observe_committed(events)
            for ev in events:
                monitor.observe(ev)

        writer = EventWriter(db, bus.publish, on_committed=committed)
        writer.start()
        stack.push_async_callback(writer.close)

        async def thread_history(context: UserExecutionContext) -> list[dict[str, Any]]:
            runs = await store.thread_history(context.user_id, context.thread_id, context.run_id)
            return [r.to_api() for r in runs]

        factory = ExecutionEngineFactory(
            registry, limits_of(settings), history_loader=thread_history
        )
        worker = None
        if redis_bus is not None and queue is not None:
            assert isinstance(store, ClusterStore)
            worker = Worker(
                store=store,
                writer=writer,
                bus=redis_bus,
                queue=queue,
                factory=factory,
                lease_s=settings.lease_s,
            )
            worker.start(execute=execute)
            stack.push_async_callback(worker.stop, settings.shutdown_grace_s)
        yield Parts(
            settings, registry, store, bus, writer, factory, metrics, monitor, queue, worker
        )
