"""Threads as a resource (contract §10): what the front doors ask of threads, and what a run
may read of its own thread.

Like :class:`~corral.runs.service.RunService`, :class:`ThreadService` raises corral's domain
errors and checks ownership against the store: another user's thread reads exactly like a
missing one (:class:`~corral.errors.NotFound`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from corral.core.context import UserExecutionContext, new_id
from corral.core.events import dumps
from corral.errors import NOT_FOUND_THREAD, Conflict, NotFound
from corral.runs.queue import RunQueue
from corral.store.reads import Reads
from corral.store.records import ThreadRecord
from corral.store.threads import CreateThread, DeleteThread, SweepIdleThreads, UpdateThread
from corral.store.writer import EventWriter

log = logging.getLogger("corral.threads")

MAX_TITLE_CHARS = 200
MAX_METADATA_BYTES = 16 * 1024
DELETE_ROUNDS = 3  # cancel the unfinished runs and try again, at most this often
DELETE_WAIT_S = 5.0  # for the cancelled runs of one round to end
REQUEST_WRITE_S = 3.0
SWEEP_BATCH = 500


def _small_metadata(value: dict[str, JsonValue] | None) -> dict[str, JsonValue] | None:
    if value is not None and len(dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is at most {MAX_METADATA_BYTES} bytes (16 KiB) as JSON")
    return value


class ThreadCreate(BaseModel):
    """Body of ``POST /v1/threads``."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=MAX_TITLE_CHARS)
    metadata: dict[str, JsonValue] | None = Field(
        default=None, description="Any JSON object of at most 16 KiB"
    )

    _metadata_size = field_validator("metadata")(_small_metadata)


class ThreadPatch(BaseModel):
    """Body of ``PATCH /v1/threads/{thread_id}``: the fields given replace the thread's
    (``title: null`` removes the title, ``metadata: null`` empties the metadata)."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=MAX_TITLE_CHARS)
    metadata: dict[str, JsonValue] | None = Field(
        default=None, description="Any JSON object of at most 16 KiB"
    )

    _metadata_size = field_validator("metadata")(_small_metadata)


class ThreadService:
    """Creates, reads, changes and deletes the caller's threads. One per app; safe from any
    task. Deleting cancels the thread's unfinished runs first (through the run queue)."""

    def __init__(self, *, reads: Reads, writer: EventWriter, queue: RunQueue) -> None:
        self.reads = reads
        self.writer = writer
        self.queue = queue

    async def create(self, user_id: str, body: ThreadCreate) -> ThreadRecord:
        op = CreateThread(user_id, new_id("thread"), body.title, body.metadata or {})
        return await self.writer.submit(op, within_s=REQUEST_WRITE_S)

    async def get(self, user_id: str, thread_id: str) -> ThreadRecord:
        """The caller's thread; :class:`NotFound` for a missing thread and for another's."""
        found = await self.reads.get_thread(user_id, thread_id)
        if found is None:
            raise NotFound(NOT_FOUND_THREAD)
        return found

    async def list(
        self, user_id: str, *, limit: int, cursor: tuple[str, str] | None
    ) -> tuple[list[ThreadRecord], str | None]:
        """A page of the caller's threads, most recently updated first, and the next cursor."""
        return await self.reads.list_threads(user_id, limit=limit, cursor=cursor)

    async def update(self, user_id: str, thread_id: str, patch: ThreadPatch) -> ThreadRecord:
        await self.get(user_id, thread_id)  # 404 before anything is queued for writing
        changes: dict[str, Any] = {}
        if "title" in patch.model_fields_set:
            changes["title"] = patch.title
        if "metadata" in patch.model_fields_set:
            changes["metadata"] = patch.metadata or {}
        op = UpdateThread(user_id, thread_id, changes)
        return await self.writer.submit(op, within_s=REQUEST_WRITE_S)

    async def delete(self, user_id: str, thread_id: str) -> None:
        """Cancel the thread's unfinished runs, then delete the thread, its runs, their events
        and idempotency keys in one transaction. :class:`NotFound` for a thread that is not
        the caller's; :class:`Conflict` when its runs would not stop (retry shortly)."""
        await self.get(user_id, thread_id)
        for _round in range(DELETE_ROUNDS):
            op = DeleteThread(user_id, thread_id)
            unfinished = await self.writer.submit(op, within_s=REQUEST_WRITE_S)
            if not unfinished:
                return
            for run_id in unfinished:
                await self.queue.cancel(user_id, run_id, "the thread was deleted")
            await asyncio.gather(
                *(self.queue.wait_settled(run_id, DELETE_WAIT_S) for run_id in unfinished)
            )
        raise Conflict("the thread's runs are still stopping; retry the DELETE in a moment")

    async def sweep(self, retention_days: float) -> int:
        """Delete threads with no run for ``retention_days`` (``CORRAL_RETENTION_DAYS``), with
        their runs and events, in batches. Returns how many were deleted."""
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        stamp = cutoff.isoformat(timespec="microseconds")[:-6] + "Z"
        total = 0
        while True:
            deleted = await self.writer.submit(SweepIdleThreads(stamp, SWEEP_BATCH))
            total += deleted
            if deleted < SWEEP_BATCH:
                return total


class StoredThreadMemory:
    """What a run reads of its own thread, from the store (a
    :class:`~corral.core.engine.ThreadMemory`): owner-scoped like every read."""

    def __init__(self, reads: Reads) -> None:
        self._reads = reads

    async def history(self, context: UserExecutionContext, limit: int) -> list[dict[str, Any]]:
        runs = await self._reads.thread_history(
            context.user_id, context.thread_id, context.run_id, limit
        )
        return [r.to_api() for r in runs]

    async def state(self, context: UserExecutionContext) -> dict[str, Any]:
        return await self._reads.thread_state(context.user_id, context.thread_id)
