"""Putting the parts together — the same parts for a single node, an API node and a worker.

Single node (no Redis): an in-process bus and run queue, and a worker beside the API. Cluster
(Redis + PostgreSQL): the Redis bus and the cluster's run queue; a node executes runs with the
same worker (``--no-executor`` makes an API-only node; ``corral worker`` only executes).
Everything is opened in order in one exit stack and closed in reverse: the worker drains
first, then the queue, the writer (what is pending is stored), the bus and the database.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from corral.auth.factory import secret_resolver_from
from corral.cluster.bus import RedisEventBus
from corral.cluster.queue import ClusterRunQueue
from corral.core.admission import Limits
from corral.core.bus import EventBus, InProcessEventBus
from corral.core.events import Event
from corral.core.factory import ExecutionEngineFactory
from corral.core.monitor import EventMonitor
from corral.core.registry import AgentRegistry
from corral.core.tracing import Tracer
from corral.errors import ConfigurationError
from corral.metrics import Metrics
from corral.runlog import RunLog
from corral.runs.queue import InProcessRunQueue, RunQueue
from corral.runs.service import RunService
from corral.runs.threads import StoredThreadMemory, ThreadService
from corral.runs.worker import Worker
from corral.settings import Settings
from corral.store.database import Database, is_sqlite, open_database
from corral.store.reads import Reads
from corral.store.writer import EventWriter
from corral.telemetry import open_tracer

log = logging.getLogger("corral.assembly")


@dataclass(frozen=True)
class Parts:
    settings: Settings
    registry: AgentRegistry
    db: Database
    bus: EventBus
    writer: EventWriter
    reads: Reads
    queue: RunQueue
    factory: ExecutionEngineFactory
    service: RunService
    threads: ThreadService
    metrics: Metrics
    monitor: EventMonitor
    worker: Worker | None
    redis: RedisEventBus | None
    tracer: Tracer

    @property
    def clustered(self) -> bool:
        return self.redis is not None


def limits_of(settings: Settings) -> Limits:
    return Limits(
        max_running_per_user=settings.max_running_per_user,
        max_queued_per_user=settings.max_queued_per_user,
        max_running_total=settings.max_running_total,
        run_timeout_s=settings.run_timeout_s,
        tool_timeout_s=settings.tool_timeout_s,
        input_timeout_s=settings.input_timeout_s,
    )


def check_topology(settings: Settings, *, execute: bool) -> None:
    """Refuse settings that cannot work together, with what to change."""
    clustered = bool(settings.redis_url)
    if clustered and is_sqlite(settings.resolved_database_url):
        raise ConfigurationError(
            "several nodes (CORRAL_REDIS_URL) need PostgreSQL: set CORRAL_DATABASE_URL to "
            "postgresql+asyncpg://user@host/db"
        )
    if not clustered and not execute:
        raise ConfigurationError(
            "--no-executor makes an API-only node, which needs workers: set --redis-url "
            "(CORRAL_REDIS_URL) and a PostgreSQL database, and run `corral worker`"
        )


@contextlib.asynccontextmanager
async def open_parts(
    settings: Settings, registry: AgentRegistry, *, execute: bool = True, role: str = "server"
) -> AsyncIterator[Parts]:
    """Everything stateful below the front doors, opened in order and closed in reverse.

    Logs one INFO line with the settings (no secrets) on the way in, and one on the way out.
    """
    check_topology(settings, execute=execute)
    registry.freeze()
    limits = limits_of(settings)
    summary = " ".join(f"{k}={v}" for k, v in settings.summary().items() if v is not None)
    log.info("corral %s starting: %s", role, summary)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(log.info, "corral %s stopped", role)
        # Entered first, so closed last: spans of runs drained at shutdown are exported.
        tracer = await stack.enter_async_context(open_tracer())
        for lifespan in registry.lifespans():
            await stack.enter_async_context(lifespan())
        db = await stack.enter_async_context(open_database(settings.resolved_database_url))
        redis: RedisEventBus | None = None
        bus: EventBus
        if settings.redis_url:
            redis = await stack.enter_async_context(RedisEventBus(settings.redis_url))
            bus = redis
        else:
            bus = InProcessEventBus()
            stack.push_async_callback(bus.close)
        metrics = Metrics()
        monitor = EventMonitor()
        run_log = RunLog()

        def observe(events: Sequence[Event]) -> None:
            metrics.observe_committed(events)
            for ev in events:
                monitor.observe(ev)
            run_log.observe(events)

        writer = await stack.enter_async_context(EventWriter(db, bus.publish, observe))
        reads = Reads(db)
        queue: RunQueue
        worker_id = Worker.new_id()
        if redis is not None:
            queue = await stack.enter_async_context(
                ClusterRunQueue(
                    writer=writer,
                    reads=reads,
                    bus=redis,
                    limits=limits,
                    lease_s=settings.lease_s,
                    owner=worker_id,
                )
            )
        else:
            queue = await stack.enter_async_context(InProcessRunQueue(writer, limits))

        # --secrets: every engine resolves ctx.secret(name) through it (executing nodes only,
        # but loaded everywhere so that a bad setting fails every process at start-up).
        resolver = secret_resolver_from(settings)
        factory = ExecutionEngineFactory(
            registry,
            limits,
            threads=StoredThreadMemory(reads),
            secrets=None if resolver is None else resolver.resolve,
            tracer=tracer,
        )
        service = RunService(
            registry=registry, reads=reads, writer=writer, queue=queue, limits=limits
        )
        threads = ThreadService(reads=reads, writer=writer, queue=queue)
        worker = None
        if execute:
            worker = await stack.enter_async_context(
                Worker(
                    queue,
                    writer,
                    factory,
                    reads,
                    grace_s=settings.shutdown_grace_s,
                    worker_id=worker_id,
                )
            )
        yield Parts(
            settings=settings,
            registry=registry,
            db=db,
            bus=bus,
            writer=writer,
            reads=reads,
            queue=queue,
            factory=factory,
            service=service,
            threads=threads,
            metrics=metrics,
            monitor=monitor,
            worker=worker,
            redis=redis,
            tracer=tracer,
        )
