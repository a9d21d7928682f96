"""``create_app``: the ASGI app and the lifespan that owns everything stateful."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.requests import Request
from starlette.routing import WebSocketRoute

from corral.assembly import open_parts
from corral.core.bus import EventBus
from corral.core.connection import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER
from corral.core.emitter import WebSocketBridgeFactory
from corral.core.events import Event, dumps
from corral.core.factory import ExecutionEngineFactory
from corral.core.monitor import EventMonitor
from corral.core.pool import WebSocketConnectionPool
from corral.core.registry import AgentRegistry
from corral.loading import load_agents
from corral.metrics import Metrics
from corral.server.errors import ApiError
from corral.server.service import RunService
from corral.settings import Settings, load_secret
from corral.store.database import ping
from corral.store.runs import RunStore
from corral.store.writer import EventWriter

log = logging.getLogger("corral.server")

STATIC = Path(__file__).parent / "static"
MONITOR_INTERVAL_S = 5.0


@dataclass
class Runtime:
    """Everything stateful of one app, made by its lifespan and closed by it, in order."""

    settings: Settings
    secret: str
    registry: AgentRegistry
    store: RunStore
    bus: EventBus
    pool: WebSocketConnectionPool
    bridge: WebSocketBridgeFactory
    factory: ExecutionEngineFactory
    writer: EventWriter
    service: RunService
    monitor: EventMonitor
    metrics: Metrics
    background: list[asyncio.Task[None]] = field(default_factory=list)
    shutting_down: bool = False

    async def ready(self) -> dict[str, bool]:
        return {"database": await ping(self.store.engine), "bus": await self.bus.ping()}

    async def begin_shutdown(self) -> None:
        """Stop taking work, close every socket with 1001, let runs finish within the grace."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.service.accepting = False
        conns = self.pool.all_connections()
        await asyncio.gather(
            *(c.close(CLOSE_GOING_AWAY, "server shutting down; resume later") for c in conns),
            return_exceptions=True,
        )
        await self.service.drain(self.settings.shutdown_grace_s)

    def resume_everyone(self) -> None:
        """The bus lost events on the way (Redis restarted): every client resumes from its
        last seq — stored events are all there — by reconnecting."""
        for conn in self.pool.all_connections():
            asyncio.get_running_loop().create_task(
                conn.close(CLOSE_TRY_AGAIN_LATER, "event stream interrupted; resume")
            )


def _default_registry(settings: Settings) -> AgentRegistry:
    return load_agents(settings.agents)


@contextlib.asynccontextmanager
async def _runtime(settings: Settings, registry: AgentRegistry) -> AsyncIterator[Runtime]:
    secret = load_secret(settings)
    async with open_parts(settings, registry, execute=settings.executor) as parts:
        metrics = parts.metrics
        pool = WebSocketConnectionPool(settings.max_connections_per_user)

        def violation(_event: Event) -> None:
            metrics.security_violations.inc()

        bridge = WebSocketBridgeFactory(pool, parts.bus, on_violation=violation)
        service: RunService
        if parts.clustered:
            from corral.server.cluster import ClusterRunService

            service = ClusterRunService(
                parts.store,  # type: ignore[arg-type]
                parts.factory,
                parts.writer,
                registry,
                bus=parts.bus,  # type: ignore[arg-type]
                queue=parts.queue,
                worker=parts.worker,
            )
        else:
            service = RunService(parts.store, parts.factory, parts.writer, registry)
        runtime = Runtime(
            settings=settings,
            secret=secret,
            registry=registry,
            store=parts.store,
            bus=parts.bus,
            pool=pool,
            bridge=bridge,
            factory=parts.factory,
            writer=parts.writer,
            service=service,
            monitor=parts.monitor,
            metrics=metrics,
        )
        if parts.clustered:
            parts.bus.on_gap = runtime.resume_everyone  # type: ignore[attr-defined]
        runtime.background.append(asyncio.create_task(_housekeeping(runtime)))
        try:
            yield runtime
        finally:
            await runtime.begin_shutdown()
            for task in runtime.background:
                task.cancel()
            await asyncio.gather(*runtime.background, return_exceptions=True)


async def _housekeeping(runtime: Runtime) -> None:
    """Monitor checks and gauges every few seconds; idempotency keys purged hourly."""
    ticks = 0
    while True:
        await asyncio.sleep(MONITOR_INTERVAL_S)
        report = runtime.monitor.check()
        m = runtime.metrics
        m.stale_runs.set(report.stale_runs)
        m.stuck_tools.set(report.stuck_tools)
        m.unpaired_tools.set(report.unpaired_total)
        ticks += 1
        if ticks % 720 == 0:
            with contextlib.suppress(Exception):
                await runtime.store.purge_idempotency_keys()


def create_app(settings: Settings | None = None, registry: AgentRegistry | None = None) -> FastAPI:
    """The corral ASGI app. Nothing stateful exists until its lifespan starts.

    To mount it inside another app, run its lifespan from yours:
    ``async with corral_app.router.lifespan_context(corral_app): yield``.
    """
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reg = registry if registry is not None else _default_registry(settings)
        async with _runtime(settings, reg) as runtime:
            app.state.runtime = runtime
            try:
                yield
            finally:
                app.state.runtime = None

    app = FastAPI(
        title="corral",
        version=_version(),
        description="Run AI agents for many users at once; each user's events reach only them.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.runtime = None
    if settings.allowed_origins:
        # The same origins a browser may open a WebSocket from may call the HTTP API.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            max_age=600,
        )

    from corral.server.assets import asset_routes
    from corral.server.routes import router
    from corral.server.ws import websocket_endpoint

    app.include_router(router)
    # A plain Starlette route: FastAPI's dependency machinery per socket costs ~4 KiB of
    # every idle connection (bench/README.md, idle suite) and the endpoint needs none of it.
    app.router.routes.append(WebSocketRoute("/v1/ws", websocket_endpoint))
    app.router.routes.extend(asset_routes())  # GET /corral-client.js (server/assets.py)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    _install_error_handlers(app)
    return app


def _version() -> str:
    from corral import __version__

    return __version__


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    def count(request: Request, code: str) -> None:
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is not None:
            runtime.metrics.http_errors.labels(code).inc()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        count(request, exc.code)
        return _json(exc.status, exc.body(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def request_validation(request: Request, exc: RequestValidationError) -> Response:
        count(request, "validation_error")
        details = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ())),
                "message": err.get("msg", "invalid"),
                "type": err.get("type", "value_error"),
            }
            for err in exc.errors()
        ]
        fields = ", ".join(d["field"] for d in details[:5])
        body = {
            "error": {
                "code": "validation_error",
                "message": f"the request is not valid: check {fields}",
                "details": details,
            }
        }
        return _json(422, body)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return _json(
            404, {"error": {"code": "not_found", "message": f"nothing at {request.url.path}"}}
        )

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _json(
            405,
            {
                "error": {
                    # The contract's codes are a closed set: no such method here is "not found".
                    "code": "not_found",
                    "message": f"{request.method} is not allowed on {request.url.path}; "
                    "see /openapi.json for the methods it takes",
                }
            },
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    @app.exception_handler(ConnectionError)
    @app.exception_handler(OSError)
    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("dependency unavailable: %s", type(exc).__name__)
        count(request, "unavailable")
        return _json(
            503,
            {
                "error": {
                    "code": "unavailable",
                    "message": "the database is unavailable; retry shortly",
                }
            },
            {"Retry-After": "1"},
        )


__all__ = ["Runtime", "create_app"]
