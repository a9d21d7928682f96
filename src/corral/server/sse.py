"""``GET /v1/runs/{id}/stream``: stored events after a seq, then live ones, as SSE."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.responses import StreamingResponse

from corral.core.connection import Connection
from corral.core.events import TERMINAL_TYPES, loads

if TYPE_CHECKING:
    from corral.server.runtime import Runtime
    from corral.store.runs import RunRecord

KEEPALIVE_S = 15.0
PAGE = 1000
_CLOSED = b""


class _StreamTransport:
    """Hands frames to the response generator one at a time (so the bound holds)."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)

    async def send(self, data: bytes) -> None:
        await self.frames.put(data)

    async def close(self, code: int, reason: str) -> None:
        while True:
            try:
                self.frames.put_nowait(_CLOSED)
                return
            except asyncio.QueueFull:
                self.frames.get_nowait()


def _frame(doc: dict[str, Any], raw: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (doc["seq"], doc["type"].encode(), raw)


async def stream_run(runtime: Runtime, record: RunRecord, after: int) -> StreamingResponse:
    user_id, run_id = record.user_id, record.run_id
    transport = _StreamTransport()
    conn = Connection(
        user_id,
        transport,
        kind="sse",
        run_filter=run_id,
        max_buffered_bytes=runtime.settings.ws_max_buffered_bytes,
        on_slow_consumer=lambda _c: runtime.metrics.slow_consumers.inc(),
    )
    conn.hold(run_id)  # before reading the store: nothing published from now on is missed
    await runtime.bridge.attach(conn)
    conn.start()

    async def frames() -> AsyncIterator[bytes]:
        last = after
        finished = record.finished
        try:
            while True:
                bodies = await runtime.service.events(user_id, run_id, after=last, limit=PAGE)
                for raw in bodies:
                    doc = loads(raw)
                    yield _frame(doc, raw)
                    last = doc["seq"]
                    if doc["type"] in TERMINAL_TYPES:
                        return
                if len(bodies) < PAGE:
                    if finished:
                        # Resumed at or past the terminal event: nothing more will come.
                        return
                    # The run row is updated with its events, and this read comes after the
                    # hold: "not finished" here means the terminal event reaches us live.
                    current = await runtime.service.get_run(user_id, run_id)
                    if not current.finished:
                        break
                    finished = True  # it ended meanwhile: read what is left, then end
            conn.release(run_id, last)
            while True:
                try:
                    raw = await asyncio.wait_for(transport.frames.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if raw is _CLOSED or not raw:
                    return
                doc = loads(raw)
                if doc["seq"] <= last:
                    continue
                yield _frame(doc, raw)
                last = doc["seq"]
                if doc["type"] in TERMINAL_TYPES:
                    return
        finally:
            conn.mark_closed()
            with contextlib.suppress(Exception):
                await runtime.bridge.detach(conn)

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
