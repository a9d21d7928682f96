"""``GET /v1/runs/{id}/stream``: stored events after a seq, then live ones, as SSE.

The stream attaches to the user's events inside the response body, so a response whose body
is never read attaches nothing, and leaving the body — the run ended, the client went away, the
server stops, the caller's sign-in expired — always detaches. ``POST /v1/runs/stream`` and the
AG-UI routes stream the same way with another :data:`Framer` (how one stored event becomes SSE
bytes) and a ``prelude`` (what is sent before the first event).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from starlette.responses import StreamingResponse

from corral.core.connection import Connection
from corral.core.events import TERMINAL_TYPES, loads
from corral.server.replay import replay

if TYPE_CHECKING:
    from corral.server.runtime import Runtime
    from corral.store.records import RunRecord

KEEPALIVE_S = 15.0
_CLOSED = b""
# An SSE comment (clients ignore it) saying why the stream ended early: resuming with a new
# sign-in (Last-Event-ID) carries on without a gap.
EXPIRED = b": your sign-in expired; sign in again and resume with Last-Event-ID\n\n"

# One stored event (its wire JSON) → the SSE bytes to send for it (maybe none), and whether
# the stream ends after them.
Framer = Callable[[bytes], tuple[bytes, bool]]


class _StreamTransport:
    """Hands frames to the response body one at a time (so the connection's bound holds)."""

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


def frame(raw: bytes) -> tuple[bytes, bool]:
    """One SSE message for an event (``id``, ``event``, ``data``), and whether it is terminal."""
    doc = loads(raw)
    kind = doc["type"]
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (doc["seq"], kind.encode(), raw), (
        kind in TERMINAL_TYPES
    )


def message(data: bytes, *, event: str | None = None, id: int | None = None) -> bytes:
    """One SSE message; ``data`` is one line of JSON."""
    head = b"" if id is None else b"id: %d\n" % id
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


def stream_run(
    runtime: Runtime,
    record: RunRecord,
    after: int,
    *,
    framer: Framer = frame,
    prelude: bytes = b"",
    until: float | None = None,
) -> StreamingResponse:
    """The SSE response of ``record``'s run from ``after``; it ends after the terminal event,
    or at ``until`` (epoch seconds: when the caller's sign-in expires), whichever is first.

    ``prelude`` goes out first, before the stream attaches; ``framer`` turns each event into
    SSE bytes (by default the contract's ``id``/``event``/``data`` message).
    """
    return StreamingResponse(
        _frames(runtime, record, after, framer, prelude, until),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _frames(
    runtime: Runtime,
    record: RunRecord,
    after: int,
    framer: Framer,
    prelude: bytes,
    until: float | None,
) -> AsyncIterator[bytes]:
    if prelude:
        yield prelude
    if record.finished and after >= record.last_seq:
        return  # resumed at or past the terminal event: nothing more will come
    transport = _StreamTransport()
    conn = Connection(
        record.user_id,
        transport,
        kind="sse",
        run_filter=record.run_id,
        max_buffered_bytes=runtime.settings.ws_max_buffered_bytes,
        on_slow_consumer=runtime.metrics.count_slow_consumer,
    )
    conn.hold(record.run_id)  # before attaching: nothing published from now on is missed
    async with runtime.bridge.session(conn):
        conn.start()
        replaying = asyncio.get_running_loop().create_task(
            replay(runtime.service, conn, record.run_id, after)
        )
        try:
            while True:
                wait_s = KEEPALIVE_S
                if until is not None:
                    left = until - time.time()
                    if left <= 0:
                        yield EXPIRED
                        return
                    wait_s = min(wait_s, left)
                try:
                    raw = await asyncio.wait_for(transport.frames.get(), wait_s)
                except TimeoutError:
                    if until is None or time.time() < until:
                        yield b": keepalive\n\n"
                    continue
                if raw is _CLOSED or not raw:
                    return
                framed, terminal = framer(raw)
                if framed:
                    yield framed
                if terminal:
                    return
        finally:
            replaying.cancel()
            await asyncio.wait({replaying})
            conn.mark_closed()
            await conn.close()
