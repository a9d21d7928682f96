"""Per-user emitters: the only way an event reaches a connection, and only its owner's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from corral.core.bus import EventBus, Subscription
from corral.core.connection import Connection
from corral.core.events import Event
from corral.core.pool import WebSocketConnectionPool

log = logging.getLogger("corral.emitter")


class UserWebSocketEmitter:
    """Bound to one user; delivers events of that user's runs to that user's connections.

    An event owned by anyone else is refused, logged as a security violation and counted —
    never delivered. ``deliver`` does not wait: each connection queues or closes itself.
    """

    __slots__ = ("_on_violation", "_pool", "user_id")

    def __init__(
        self,
        user_id: str,
        pool: WebSocketConnectionPool,
        on_violation: Callable[[Event], None] | None = None,
    ) -> None:
        self.user_id = user_id
        self._pool = pool
        self._on_violation = on_violation

    def deliver(self, event: Event, payload: bytes | None = None) -> int:
        """Queue ``event`` on each of the user's connections; returns how many took it."""
        if event.user_id != self.user_id:
            log.error(
                "security: refused an event of another user's run",
                extra={"user_id": self.user_id, "run_id": event.run_id},
            )
            if self._on_violation is not None:
                self._on_violation(event)
            return 0
        data = payload if payload is not None else event.to_json()
        delivered = 0
        for conn in self._pool.connections(self.user_id):
            delivered += conn.offer_event(event, data)
        return delivered


class WebSocketBridgeFactory:
    """Wires the bus to per-user emitters for the connections of one process.

    ``attach`` adds a connection to the pool and, for the user's first connection here,
    subscribes to the user's events on the bus; ``detach`` undoes both. Other users' events
    are never subscribed, so they never enter this process's delivery path at all.
    """

    def __init__(
        self,
        pool: WebSocketConnectionPool,
        bus: EventBus,
        on_violation: Callable[[Event], None] | None = None,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self._on_violation = on_violation
        self._subs: dict[str, asyncio.Task[Subscription]] = {}

    @contextlib.asynccontextmanager
    async def session(self, connection: Connection) -> AsyncIterator[Connection]:
        """``async with bridge.session(conn)``: attached (events flowing) inside, detached —
        whatever way the block ends — after. Raises ``ConnectionLimitError`` on entering when
        the user is at the limit (nothing attached)."""
        await self.attach(connection)
        try:
            yield connection
        finally:
            await self.detach(connection)

    def create_emitter(self, user_id: str) -> UserWebSocketEmitter:
        return UserWebSocketEmitter(user_id, self.pool, self._on_violation)

    async def attach(self, connection: Connection) -> None:
        """Register ``connection``; returns once its user's events are flowing to it.

        Raises ``ConnectionLimitError`` (nothing registered) when the user is at the limit.
        """
        user_id = connection.user_id
        first = self.pool.add(user_id, connection)
        task = self._subs.get(user_id)
        if first or task is None:
            emitter = self.create_emitter(user_id)
            task = asyncio.ensure_future(self.bus.subscribe(user_id, emitter.deliver))
            self._subs[user_id] = task
        try:
            await asyncio.shield(task)
        except BaseException:
            await self.detach(connection)
            raise

    async def detach(self, connection: Connection) -> None:
        """Unregister ``connection``; the last one of its user ends the subscription."""
        user_id = connection.user_id
        if self.pool.remove(user_id, connection):
            task = self._subs.pop(user_id, None)
            if task is not None:
                try:
                    sub = await task
                except Exception:
                    log.debug("subscription had failed", exc_info=True)
                    return
                await sub.close()

    def subscribed_users(self) -> int:
        return len(self._subs)
