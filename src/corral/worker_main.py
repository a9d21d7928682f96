"""``corral worker``: a process that only executes cluster runs, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from corral import logs
from corral.assembly import open_parts
from corral.errors import ConfigurationError
from corral.heap import freeze_startup_heap
from corral.loading import load_agents
from corral.settings import Settings

log = logging.getLogger("corral.worker")


async def serve_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Run a worker until ``stop`` is set; then let runs finish within the grace period."""
    if not settings.redis_url:
        raise ConfigurationError("corral worker needs --redis-url (CORRAL_REDIS_URL)")
    registry = load_agents(settings.agents)
    async with open_parts(settings, registry, execute=True, role="worker") as parts:
        assert parts.worker is not None
        freeze_startup_heap()
        # One machine-readable line: scripts and tests wait for it.
        print(f"corral worker {parts.worker.worker_id} ready", flush=True)
        await stop.wait()
        log.info("stopping: letting runs finish for up to %.0f s", settings.shutdown_grace_s)
        await parts.worker.drain(settings.shutdown_grace_s)


def run_worker(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_json)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_worker(settings, stop)

    try:
        import uvloop  # installed with uvicorn[standard]; uvicorn uses it for `corral serve`
    except ImportError:  # pragma: no cover - uvloop is absent on some platforms
        asyncio.run(main())
    else:
        uvloop.run(main())
