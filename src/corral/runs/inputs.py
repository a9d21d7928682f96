"""The server's input gate: a run waits for its user's answer in the store, not in memory.

One gate per run executed by a :class:`~corral.runs.worker.Worker`. When the agent asks, the
run gives back its slot (:class:`RunSlot`), then waits for the answer: it reads the run's row
whenever a hint arrives — from this process's service on a single node, from the cluster's
control channel or a lease renewal in a cluster — so the answer may have been accepted by any
API node, and a lost hint costs a moment, never the answer. When the question's timeout passes
first, the question is closed in the store (a later answer is refused with 409). Either way
the run then waits for a running slot again before the agent goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Protocol

from corral.core.asking import Answer, InputRequest
from corral.errors import FencedError, StoreUnavailable
from corral.store.database import Database
from corral.store.inputs import CloseInputRequest, read_answer
from corral.store.records import RunRecord
from corral.store.writer import EventWriter

log = logging.getLogger("corral.inputs")

RETRY_S = 1.0  # a read the database refused is tried again this soon (or at the next hint)


class RunSlot(Protocol):
    """A run's running slot, as its worker holds it."""

    def suspend(self) -> None:
        """Give the slot back: the run waits for its user."""
        ...

    async def resume(self) -> None:
        """Wait for a slot again (cancellation-safe)."""
        ...


class StoreInputGate:
    """The :class:`~corral.core.asking.InputGate` of one run on a server.

    ``hint`` is set by the worker whenever an answer to this run may be stored. Cancelling
    :meth:`wait` (the run is cancelled or interrupted) ends it at once; the question stays in
    the store until the run's terminal event clears it.
    """

    def __init__(
        self,
        run: RunRecord,
        slot: RunSlot,
        hint: asyncio.Event,
        db: Database,
        writer: EventWriter,
    ) -> None:
        self._run = run
        self._slot = slot
        self._hint = hint
        self._db = db
        self._writer = writer

    async def wait(self, request: InputRequest, asked: Awaitable[None]) -> Answer | None:
        await asked  # stored: answerable on any node from now on, so the slot can go
        self._slot.suspend()
        answer = await self._answer(request)
        await self._slot.resume()
        return answer

    async def _answer(self, request: InputRequest) -> Answer | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout_s
        while True:
            self._hint.clear()  # before reading: a hint that arrives during the read counts
            pause: float | None = None
            try:
                found = await self._read(request)
            except StoreUnavailable as exc:
                log.warning("could not read the answer (%s); retrying", exc)
                found, pause = None, RETRY_S
            if found is not None:
                return found
            left = deadline - loop.time()
            if left <= 0:
                if await self._writer.submit(CloseInputRequest(self._run.run_id)):
                    return None
                # Not closed: an answer was stored first (take it), or the run is not ours.
                found = await self._read(request)
                if found is None:
                    raise FencedError(self._run.run_id, self._run.attempt)
                return found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hint.wait(), min(left, pause or left))

    async def _read(self, request: InputRequest) -> Answer | None:
        run_id, request_id = self._run.run_id, request.request_id
        found = await self._db.read(lambda sql: read_answer(sql, run_id, request_id))
        return None if found is None else Answer(found[0])
