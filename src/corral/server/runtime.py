"""The typed runtime of one app: what its front doors (HTTP, SSE, WebSocket) may call."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from corral.assembly import Parts
from corral.auth.identity import Identity
from corral.auth.request import AuthRequest, Transport, bearer
from corral.core.connection import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER
from corral.core.emitter import WebSocketBridgeFactory
from corral.core.monitor import EventMonitor
from corral.core.pool import WebSocketConnectionPool
from corral.core.registry import AgentRegistry
from corral.errors import ServiceUnavailable
from corral.metrics import Metrics
from corral.runs.service import RunService
from corral.server.auth_request import auth_request
from corral.server.signin import SignIn
from corral.settings import Settings


@dataclass
class Runtime:
    """Everything stateful of one app, made by its lifespan and closed by it, in order.

    ``signin`` holds the app's one authenticator; ``secret`` is the HS256 secret development
    tokens are signed with, or None when the server verifies with a hook, a key or a JWKS
    (dev tokens are off then: they could not sign in).
    """

    settings: Settings
    secret: str | None
    signin: SignIn
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

    async def authenticate(self, conn: HTTPConnection, transport: Transport = "http") -> Identity:
        """The caller of an HTTP request (``transport="sse"`` for an event stream).

        Raises :class:`~corral.errors.Unauthorized` (401) or
        :class:`~corral.errors.ServiceUnavailable` (503) — see :class:`SignIn`.
        """
        if self.signin.token_only:  # the JWT check reads the token alone: copy nothing else
            token = bearer(conn.headers.get("authorization"))
            return await self.signin.require(AuthRequest(transport=transport, token=token))
        return await self.signin.require(auth_request(conn, transport))

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
