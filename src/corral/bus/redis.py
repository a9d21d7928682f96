"""The event bus on Redis pub/sub: one channel per user, subscribed only where they connect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from corral.core.bus import Handler
from corral.core.events import Event

log = logging.getLogger("corral.bus.redis")

PREFIX = "corral:"
CONTROL = f"{PREFIX}control"


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

    One pub/sub connection per process, read by one task. When Redis goes away the reader
    reconnects with backoff and subscribes again; events published meanwhile were stored
    first, so ``on_gap`` is called and connections are closed for their clients to resume.
    """

    def __init__(self, client: aioredis.Redis, on_gap: Callable[[], None] | None = None) -> None:
        self._client = client
        self._subs: dict[str, list[_RedisSubscription]] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closed = False
        self.on_gap = on_gap
        self.on_control: Callable[[bytes], None] | None = None

    @classmethod
    async def connect(cls, url: str) -> RedisEventBus:
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=None,
            health_check_interval=10,
            retry_on_timeout=True,
        )
        bus = cls(client)
        bus._reader = asyncio.get_running_loop().create_task(bus._read_forever())
        return bus

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    async def publish(self, event: Event, payload: bytes) -> None:
        # The owner travels with the event, so the receiving side checks channel == owner.
        await self._client.publish(
            user_channel(event.user_id), event.user_id.encode() + b"\n" + payload
        )

    async def publish_control(self, message: bytes) -> None:
        """Broadcast a control message (e.g. a cancellation) to every corral process."""
        await self._client.publish(CONTROL, message)

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
                if not first:
                    log.warning("reconnected to Redis; clients resume from the store")
                    if self.on_gap is not None:
                        self.on_gap()
                first = False
                delay = 0.1
                self._connected.set()
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None or message.get("type") != "message":
                        continue
                    self._dispatch(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._connected.clear()
                self._pubsub = None
                log.warning(
                    "Redis pub/sub lost (%s); retrying in %.1f s", type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, channel: bytes | str, data: bytes) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        if name == CONTROL:
            if self.on_control is not None:
                self.on_control(data)
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
        data = payload
        for sub in list(subs):
            try:
                sub.handler(event, data)
            except Exception:
                log.exception("event handler failed", extra={"user_id": event.user_id})

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._subs.clear()
        await self._client.aclose()
