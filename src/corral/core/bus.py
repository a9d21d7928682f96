"""The event bus seam: publish a stored event, deliver it to the processes holding its user."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from corral.core.events import Event

log = logging.getLogger("corral.bus")

Handler = Callable[[Event, bytes], object]


class Subscription(Protocol):
    async def close(self) -> None: ...


class EventBus(Protocol):
    """Routes events by owner. Implementations: :class:`InProcessEventBus`, the Redis bus.

    ``publish`` is called with stored events in ``seq`` order per run. A handler is called
    with the event and its serialized bytes, in publish order per run; it must not block (it
    queues onto connections).
    """

    async def publish(self, batch: Sequence[tuple[Event, bytes]]) -> None: ...

    async def subscribe(self, user_id: str, handler: Handler) -> Subscription: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class _LocalSubscription:
    __slots__ = ("_bus", "handler", "user_id")

    def __init__(self, bus: InProcessEventBus, user_id: str, handler: Handler) -> None:
        self._bus = bus
        self.user_id = user_id
        self.handler = handler

    async def close(self) -> None:
        self._bus._unsubscribe(self)


class InProcessEventBus:
    """A bus for one process: user → subscriptions, created and owned by one app."""

    def __init__(self) -> None:
        self._subs: dict[str, list[_LocalSubscription]] = {}
        self._closed = False

    async def publish(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        for event, payload in batch:
            for sub in self._subs.get(event.user_id, ()):
                try:
                    sub.handler(event, payload)
                except Exception:  # one broken handler must not starve the others
                    log.exception("event handler failed", extra={"user_id": event.user_id})

    async def subscribe(self, user_id: str, handler: Handler) -> Subscription:
        sub = _LocalSubscription(self, user_id, handler)
        self._subs.setdefault(user_id, []).append(sub)
        return sub

    def _unsubscribe(self, sub: _LocalSubscription) -> None:
        subs = self._subs.get(sub.user_id)
        if subs is None:
            return
        try:
            subs.remove(sub)
        except ValueError:
            return
        if not subs:
            del self._subs[sub.user_id]

    def subscribed_users(self) -> int:
        return len(self._subs)

    async def ping(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        self._closed = True
        self._subs.clear()
