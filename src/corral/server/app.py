"""``create_app``: the ASGI app and the lifespan that owns everything stateful."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from corral.assembly import open_parts
from corral.auth.factory import authenticator_from, dev_token_secret
from corral.core.emitter import WebSocketBridgeFactory
from corral.core.events import Event, dumps
from corral.core.pool import WebSocketConnectionPool
from corral.core.registry import AgentRegistry
from corral.errors import CorralError, StoreUnavailable
from corral.loading import load_agents
from corral.server.api import routes_for
from corral.server.assets import asset_routes
from corral.server.errors import answer_for
from corral.server.hosts import HostGuard, HostPolicy
from corral.server.openapi import build_openapi
from corral.server.request_id import RequestIdMiddleware
from corral.server.routes import OPERATIONS
from corral.server.runtime import Runtime
from corral.server.signin import SignIn
from corral.server.tracing import HttpTracingMiddleware
from corral.server.ws import websocket_endpoint
from corral.settings import Settings
from corral.store.ops import PurgeIdempotencyKeys
from corral.telemetry import tracing_configured

log = logging.getLogger("corral.server")

STATIC = Path(__file__).parent / "static"
MONITOR_INTERVAL_S = 5.0


def _default_registry(settings: Settings) -> AgentRegistry:
    return load_agents(settings.agents)


@contextlib.asynccontextmanager
async def _runtime(settings: Settings, registry: AgentRegistry) -> AsyncIterator[Runtime]:
    # The one authenticator of every front door (HTTP, SSE, WebSocket). It is closed last:
    # sockets it signed in are closed (begin_shutdown) before its JWKS client goes.
    authenticator = authenticator_from(settings)
    role = "server" if settings.executor else "api-node"
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(authenticator.aclose)
        parts = await stack.enter_async_context(
            open_parts(settings, registry, execute=settings.executor, role=role)
        )
        metrics = parts.metrics
        pool = WebSocketConnectionPool(settings.max_connections_per_user)

        def violation(_event: Event) -> None:
            metrics.security_violations.inc()

        bridge = WebSocketBridgeFactory(pool, parts.bus, on_violation=violation)
        runtime = Runtime(
            settings=settings,
            secret=dev_token_secret(settings),
            signin=SignIn.of(authenticator, settings),
            parts=parts,
            pool=pool,
            bridge=bridge,
        )
        if parts.redis is not None:
            parts.redis.on_gap = runtime.resume_everyone
        housekeeping = asyncio.create_task(_housekeeping(runtime), name="housekeeping")
        try:
            yield runtime
        finally:
            await runtime.begin_shutdown()
            housekeeping.cancel()
            await asyncio.gather(housekeeping, return_exceptions=True)


async def _housekeeping(runtime: Runtime) -> None:
    """Monitor checks and gauges every few seconds; idempotency keys purged hourly; idle
    threads deleted every ``retention_sweep_s`` when ``CORRAL_RETENTION_DAYS`` is set."""
    loops = [_monitor(runtime)]
    if runtime.settings.retention_days is not None:
        loops.append(_retention(runtime, runtime.settings.retention_days))
    await asyncio.gather(*loops)  # cancelled together at shutdown


async def _retention(runtime: Runtime, days: float) -> None:
    """Delete threads with no run for ``days``, with their runs and events (every API node
    sweeps; a thread is deleted once, by whichever gets there first)."""
    while True:
        try:
            deleted = await runtime.parts.threads.sweep(days)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("the retention sweep failed (%s); trying again later", exc)
        else:
            if deleted:
                log.info("deleted %d thread(s) idle for %g days or more", deleted, days)
        await asyncio.sleep(runtime.settings.retention_sweep_s)


async def _monitor(runtime: Runtime) -> None:
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
            try:
                await runtime.parts.writer.submit(PurgeIdempotencyKeys())
            except Exception as exc:
                log.warning("purging old idempotency keys failed (%s)", exc)


class CorralApp(Starlette):
    """Starlette with corral's outermost layers around everything, Starlette's error
    handling included, so that a 500 carries its request id and ends its span too."""

    def __init__(self, *, traced: bool, **kwargs: Any) -> None:
        self._traced = traced
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        if self._traced:
            app = HttpTracingMiddleware(app)
        return RequestIdMiddleware(app)


def create_app(
    settings: Settings | None = None, registry: AgentRegistry | None = None
) -> Starlette:
    """The corral ASGI app. Nothing stateful exists until its lifespan starts.

    To mount it inside another app (``app.mount("/agents", corral_app)``), run its lifespan
    from yours: ``async with corral_app.router.lifespan_context(corral_app): yield`` (README,
    "Mount corral in your app"). Every URL the page, its script and its socket use is relative
    to where the app is mounted.
    """
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        reg = registry if registry is not None else _default_registry(settings)
        async with _runtime(settings, reg) as runtime:
            app.state.runtime = runtime
            try:
                yield
            finally:
                app.state.runtime = None

    document = build_openapi(
        OPERATIONS,
        title="corral",
        version=_version(),
        description="Run AI agents for many users at once; each user's events reach only them.",
    )
    schema_bytes = dumps(document)

    async def openapi(_request: Request) -> Response:
        return Response(schema_bytes, media_type="application/json")

    async def index(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    # Outermost of corral's own middleware: Host, Origin and /metrics checks (server/hosts.py);
    # the policy is read here so that a malformed CORRAL_ALLOWED_HOSTS fails create_app.
    middleware = [Middleware(HostGuard, policy=HostPolicy.from_settings(settings))]
    if settings.allowed_origins:
        # The same origins a browser may open a WebSocket from may call the HTTP API.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.allowed_origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "Idempotency-Key",
                    "Last-Event-ID",
                    "X-Request-ID",
                    "traceparent",
                    "tracestate",
                ],
                expose_headers=["X-Request-ID"],
                max_age=600,
            )
        )
    app = CorralApp(
        traced=tracing_configured(),
        routes=[
            *routes_for(OPERATIONS),
            Route("/openapi.json", openapi, methods=["GET"]),
            # A plain route: per-socket machinery costs memory on every idle connection.
            WebSocketRoute("/v1/ws", websocket_endpoint),
            Route("/", index, methods=["GET"]),
            *asset_routes(),  # GET /corral-client.js (server/assets.py)
            Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static"),
        ],
        middleware=middleware,
        exception_handlers={
            HTTPException: _http_exception,
            CorralError: _corral_error,
            # Until every store call raises StoreUnavailable itself: a driver's connection
            # error is the database being away (503), not a bug.
            OperationalError: _database_away,
            DBAPIError: _database_away,
            ConnectionError: _database_away,
            OSError: _database_away,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = None
    return app


def _version() -> str:
    from corral import __version__

    return __version__


def _json(status: int, body: object, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def _count(request: Request, code: str) -> None:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        runtime.metrics.http_errors.labels(code).inc()


async def _corral_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CorralError)
    answer = answer_for(exc)
    if answer is None:
        return await _internal_error(request, exc)
    if answer.status == 503:
        log.warning("answered 503: %s", answer.message)
    _count(request, answer.code)
    return _json(answer.status, answer.body(), answer.headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        # The contract's codes are a closed set: no such method here is "not found".
        body = {
            "error": {
                "code": "not_found",
                "message": f"{request.method} is not allowed on {request.url.path}; "
                "see /openapi.json for the methods it takes",
            }
        }
    else:
        body = {"error": {"code": "not_found", "message": f"nothing at {request.url.path}"}}
    _count(request, "not_found")
    return _json(exc.status_code, body, exc.headers)


async def _database_away(request: Request, exc: Exception) -> Response:
    return await _corral_error(request, StoreUnavailable(type(exc).__name__))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("request failed: %s %s", request.method, request.url.path, exc_info=exc)
    _count(request, "internal")
    body = {"error": {"code": "internal", "message": "the server failed; it is logged"}}
    return _json(500, body)


__all__ = ["Runtime", "create_app"]
