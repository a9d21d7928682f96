"""The event bus on Redis pub/sub: one channel per user, subscribed only where they connect.

Beside the users' channels, one control channel carries what every corral process of the
cluster must hear: "there is work" (workers claim), "cancel this run" (its worker stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from corral.core.bus import Handler
from corral.core.events import Event
from corral.outage import Outage

log = logging.getLogger("corral.cluster.bus")

PREFIX = "corral:"
CONTROL = f"{PREFIX}control"
ControlHandler = Callable[[bytes], None]


def user_channel(user_id: str) -> str:
    return f"{PREFIX}u:{user_id}"


class _RedisSubscription:
    __slots__ = ("_bus", "channel", "handler", "user_id")

    def __init__(self, bus: RedisEventBus, user_id: str, handler: Handler) -> None:
        self._bus = bus
        self.user_id = user_id
        self.channel = user_channel(user_id)
        self.handler = handler

    async def close(self) -> None:
        await self._bus._unsubscribe(self)


class RedisEventBus:
    """Publishes each stored event on its owner's channel; a process subscribes to the
    channels of the users connected to it, and to nothing else.

    ``async with RedisEventBus(url)``: one pub/sub connection per process, read by one task.
    When Redis goes away the reader reconnects with backoff and subscribes again; events
    published meanwhile were stored first, so ``on_gap`` is called and connections are closed
    for their clients to resume.
    """

    def __init__(self, url: str) -> None:
        self._client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=None,
            health_check_interval=10,
            retry_on_timeout=True,
        )
        self._subs: dict[str, list[_RedisSubscription]] = {}
        self._control: list[ControlHandler] = []
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self.on_gap: Callable[[], None] | None = None
        self._outage = Outage(
            log,
            "Redis is unreachable: live events pause, sockets will resume from the store",
            "Redis is reachable again; clients resume from the store",
        )

    async def __aenter__(self) -> RedisEventBus:
        self._reader = asyncio.get_running_loop().create_task(
            self._read_forever(), name="redis-bus"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    async def publish(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        """Publish stored events, in order, in one round trip."""
        if not batch:
            return
        pipe = self._client.pipeline(transaction=False)
        for event, payload in batch:
            # The owner travels with the event, so the receiving side checks channel == owner.
            pipe.publish(user_channel(event.user_id), event.user_id.encode() + b"\n" + payload)
        await pipe.execute()

    async def publish_control(self, message: bytes) -> None:
        """Broadcast a control message to every corral process."""
        await self._client.publish(CONTROL, message)

    def on_control(self, handler: ControlHandler) -> None:
        """Call ``handler`` with every control message (it must not block)."""
        self._control.append(handler)

    async def subscribe(self, user_id: str, handler: Handler) -> _RedisSubscription:
        sub = _RedisSubscription(self, user_id, handler)
        subs = self._subs.setdefault(sub.channel, [])
        subs.append(sub)
        if len(subs) == 1 and self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.subscribe(sub.channel)
        return sub

    async def _unsubscribe(self, sub: _RedisSubscription) -> None:
        subs = self._subs.get(sub.channel)
        if not subs or sub not in subs:
            return
        subs.remove(sub)
        if not subs:
            del self._subs[sub.channel]
            if self._pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.unsubscribe(sub.channel)

    def subscribed_users(self) -> int:
        return len(self._subs)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2):
                return bool(await self._client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def _read_forever(self) -> None:
        delay = 0.1
        first = True
        while not self._closed:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                # The control channel also keeps the connection subscribed when no user is.
                await pubsub.subscribe(CONTROL, *self._subs)
                self._pubsub = pubsub
                self._outage.succeeded()
                if not first and self.on_gap is not None:
                    self.on_gap()
                first = False
                delay = 0.1
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None or message.get("type") != "message":
                        continue
                    self._dispatch(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._pubsub = None
                self._outage.failed(f"{type(exc).__name__}; retrying every {delay:.1f} s or so")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, channel: bytes | str, data: bytes) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        if name == CONTROL:
            for handler in self._control:
                try:
                    handler(data)
                except Exception:
                    log.exception("a control handler failed")
            return
        subs = self._subs.get(name)
        if not subs:
            return
        owner, _, payload = data.partition(b"\n")
        try:
            event = Event.from_json(payload, owner.decode())
        except Exception:
            log.error("dropped a malformed event on %s", name)
            return
        for sub in list(subs):
            try:
                sub.handler(event, payload)
            except Exception:
                log.exception("event handler failed", extra={"user_id": event.user_id})

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        self._subs.clear()
        await self._client.aclose()
