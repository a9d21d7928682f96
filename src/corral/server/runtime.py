"""The typed runtime of one app: what its front doors (HTTP, SSE, WebSocket) may call."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from corral.assembly import Parts
from corral.core.connection import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER
from corral.core.emitter import WebSocketBridgeFactory
from corral.core.monitor import EventMonitor
from corral.core.pool import WebSocketConnectionPool
from corral.core.registry import AgentRegistry
from corral.errors import ServiceUnavailable, Unauthorized
from corral.metrics import Metrics
from corral.runs.service import RunService
from corral.server.auth import AuthError, Identity, bearer, verify_token
from corral.settings import Settings


@dataclass
class Runtime:
    """Everything stateful of one app, made by its lifespan and closed by it, in order."""

    settings: Settings
    secret: str
    parts: Parts
    pool: WebSocketConnectionPool
    bridge: WebSocketBridgeFactory
    shutting_down: bool = False

    @property
    def service(self) -> RunService:
        return self.parts.service

    @property
    def registry(self) -> AgentRegistry:
        return self.parts.registry

    @property
    def metrics(self) -> Metrics:
        return self.parts.metrics

    @property
    def monitor(self) -> EventMonitor:
        return self.parts.monitor

    def authenticate_token(self, token: str | None) -> Identity:
        """The identity a bearer token names; :class:`Unauthorized` saying why not."""
        if token is None:
            raise Unauthorized(
                "send Authorization: Bearer <token> (`corral token USER` prints one)"
            )
        try:
            return verify_token(self.secret, token)
        except AuthError as exc:
            raise Unauthorized(str(exc)) from None

    def authenticate(self, conn: HTTPConnection) -> Identity:
        """The caller of an HTTP request (or SSE stream)."""
        return self.authenticate_token(bearer(conn.headers.get("authorization")))

    async def ready(self) -> dict[str, bool]:
        return {"database": await self.parts.db.ping(), "bus": await self.parts.bus.ping()}

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
        if self.parts.worker is not None:
            await self.parts.worker.drain(self.settings.shutdown_grace_s)

    def resume_everyone(self) -> None:
        """The bus lost events on the way (Redis restarted): every client resumes from its
        last seq — stored events are all there — by reconnecting."""
        for conn in self.pool.all_connections():
            asyncio.get_running_loop().create_task(
                conn.close(CLOSE_TRY_AGAIN_LATER, "event stream interrupted; resume")
            )


def runtime_of(conn: HTTPConnection) -> Runtime:
    """The app's runtime; :class:`ServiceUnavailable` while it starts or after it stopped."""
    runtime = getattr(conn.app.state, "runtime", None)
    if runtime is None:
        raise ServiceUnavailable("the server is starting or stopping; retry shortly", 1)
    assert isinstance(runtime, Runtime)
    return runtime
