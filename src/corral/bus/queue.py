"""The run queue on a Redis Stream with one consumer group for all workers.

The stream only *dispatches*: PostgreSQL decides who runs what (see
:mod:`corral.store.cluster`). A message is acknowledged once its run is claimed or found not
claimable; a message a dead consumer held is reclaimed by another after ``reclaim_idle_ms``.
Redis keeps nothing on disk here, so after a Redis restart the stream is empty: workers
re-dispatch every queued run from the database (``sweep``), and nothing queued is lost.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

log = logging.getLogger("corral.queue")

STREAM = "corral:runs"
GROUP = "workers"
MAX_LEN = 100_000


class RedisRunQueue:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def ensure_group(self) -> None:
        try:
            await self._client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, run_id: str) -> None:
        await self._client.xadd(STREAM, {"run": run_id}, maxlen=MAX_LEN, approximate=True)

    async def read(self, consumer: str, count: int, block_ms: int) -> list[tuple[bytes, str]]:
        """Up to ``count`` new messages for ``consumer`` (waits up to ``block_ms``)."""
        try:
            reply: Any = await self._client.xreadgroup(
                GROUP, consumer, {STREAM: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()  # Redis restarted empty
            return []
        return [
            (msg_id, fields[b"run"].decode())
            for _stream, msgs in reply or ()
            for msg_id, fields in msgs
            if b"run" in fields
        ]

    async def reclaim(
        self, consumer: str, min_idle_ms: int, count: int = 50
    ) -> list[tuple[bytes, str]]:
        """Messages another consumer took but never acknowledged (it died): now ours."""
        try:
            reply: Any = await self._client.xautoclaim(
                STREAM, GROUP, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        msgs = reply[1] if reply else []
        return [
            (msg_id, fields[b"run"].decode())
            for msg_id, fields in msgs
            if fields and b"run" in fields
        ]

    async def ack(self, *msg_ids: bytes) -> None:
        if msg_ids:
            await self._client.xack(STREAM, GROUP, *msg_ids)
