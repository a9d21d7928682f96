"""A run's deadline that stops while the run waits for its user (contract §9).

Time spent waiting for an answer — and for a running slot after it — does not count toward
the run's timeout: the engine pauses the deadline when the agent asks and resumes it when the
agent goes on, moving the deadline later by the time paused.
"""

from __future__ import annotations

import asyncio
from typing import Any


class RunDeadline:
    """The deadline of one run on the event loop's clock (``loop.time()``), pausable.

    Not thread-safe: use it from the run's event loop. Pauses do not nest (a run has at most
    one open question); :meth:`pause` while paused and :meth:`resume` while running do nothing.
    """

    __slots__ = ("_changed", "_deadline", "_paused_at")

    def __init__(self) -> None:
        self._deadline: float | None = None
        self._paused_at: float | None = None
        self._changed: asyncio.Future[None] | None = None

    def start(self, timeout_s: float | None) -> None:
        """Start counting ``timeout_s`` from now (None: no deadline)."""
        now = asyncio.get_running_loop().time()
        self._deadline = None if timeout_s is None else now + timeout_s

    @property
    def deadline(self) -> float | None:
        """When the run times out if it goes on now; None without a timeout."""
        if self._deadline is None or self._paused_at is None:
            return self._deadline
        return self._deadline + (asyncio.get_running_loop().time() - self._paused_at)

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = asyncio.get_running_loop().time()
            self._wake()

    def resume(self) -> None:
        if self._paused_at is None:
            return
        if self._deadline is not None:
            self._deadline += asyncio.get_running_loop().time() - self._paused_at
        self._paused_at = None
        self._wake()

    async def wait(self, task: asyncio.Future[Any]) -> bool:
        """Wait until ``task`` is done (True) or the deadline passed while not paused (False).

        Cancelling the caller does not cancel ``task``.
        """
        loop = asyncio.get_running_loop()
        while not task.done():
            if self._deadline is None or self._paused_at is not None:
                timeout = None
            else:
                timeout = self._deadline - loop.time()
                if timeout <= 0:
                    return False
            changed = self._changed = loop.create_future()
            try:
                await asyncio.wait({task, changed}, timeout=timeout, return_when="FIRST_COMPLETED")
            finally:
                self._changed = None
                changed.cancel()
        return True

    def _wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
