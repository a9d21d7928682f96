"""Resume: a run's stored events after a seq, then its live ones — no gap, no duplicate.

One replay for the WebSocket's ``resume`` and for SSE: the run is *held* on the connection
before the store is read (live events of it are buffered from then on, counted toward the
connection's bound), the stored events are sent page by page at the socket's pace, and the held
events with a greater seq are released after them.
"""

from __future__ import annotations

from corral.core.connection import Connection
from corral.core.events import loads
from corral.runs.service import RunService

PAGE = 1000


async def replay(service: RunService, conn: Connection, run_id: str, after: int) -> int:
    """Send ``run_id``'s stored events with ``seq > after`` to ``conn``, then go live.

    The caller holds the run first (:meth:`Connection.hold`) when it must not miss an event
    published while it was getting here; otherwise this holds it. Returns the last seq sent (or
    ``after``). Cancellation-safe: the hold is released whatever happens.
    """
    conn.hold(run_id)
    last = after
    try:
        while True:
            bodies = await service.events(conn.user_id, run_id, after=last, limit=PAGE)
            for raw in bodies:
                # A replay may be far larger than the connection's bound, so it goes at the
                # socket's pace instead of closing a client that reads as fast as it can.
                if not await conn.wait_for_room(len(raw)):
                    return last
                conn.offer(raw)
            if bodies:
                last = int(loads(bodies[-1])["seq"])
            if len(bodies) < PAGE:
                return last
    finally:
        conn.release(run_id, last)
