"""One user's outgoing connection: a bounded queue and the task that writes it out."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from corral.core.events import Event

log = logging.getLogger("corral.connection")

# Close codes (RFC 6455 and the contract).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013

DEFAULT_MAX_BUFFERED_BYTES = 2 * 1024 * 1024
DEFAULT_MAX_BUFFERED_MESSAGES = 20_000
MAX_FLOORS = 256  # replayed runs whose late live duplicates a connection still drops


class Transport(Protocol):
    """Anything that can send a text frame and close: a WebSocket, an SSE stream, a test sink."""

    async def send(self, data: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class ConnectionState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


# Looking a member up on an Enum class goes through a descriptor call in Python 3.11; these are
# checked for every frame on every socket (measured: 10 % of a fan-out's server CPU).
_OPEN = ConnectionState.OPEN
_CLOSED = ConnectionState.CLOSED


class Connection:
    """A transport owned by one user, with a bounded outgoing queue.

    ``offer`` never waits: it queues the bytes, or — when the bytes held for this connection
    (queued, held, and the frame being written) would pass the bound — closes it with
    1013 as a slow consumer. The producer and every other connection never wait on it. After
    ``start``, a writer task runs while frames are queued and ends when they are written (an
    idle connection holds no task); ``close`` is idempotent.

    Per-run holds support resume without gap or duplicate: while a run is held its live
    events are buffered; ``release(run_id, after_seq)`` then sends those with a greater seq.
    """

    def __init__(
        self,
        user_id: str,
        transport: Transport,
        *,
        kind: str = "ws",
        run_filter: str | None = None,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        max_buffered_messages: int = DEFAULT_MAX_BUFFERED_MESSAGES,
        on_slow_consumer: Callable[[Connection], None] | None = None,
        on_sent: Callable[[Event], None] | None = None,
    ) -> None:
        self.user_id = user_id
        self.kind = kind
        self.run_filter = run_filter
        self._transport = transport
        self._max_bytes = max_buffered_bytes
        self._max_messages = max_buffered_messages
        self._on_slow = on_slow_consumer
        self._on_sent = on_sent
        # An idle connection holds as little as it can (measured per socket at 10,000 idle
        # sockets): the queue exists while frames wait (an empty deque is ~0.7 KiB), and so
        # does the writer task; ``_drained`` exists once a replay waits (an asyncio.Event
        # carries a waiter deque of that size too), ``_closed`` once a close waits.
        self._queue: deque[tuple[bytes, Event | None]] | None = None
        self._buffered = 0
        self._started = False
        self._drained: asyncio.Event | None = None  # set when a frame is written or it closes
        self._closed: asyncio.Future[None] | None = None  # done once the transport is closed
        self._holds: dict[str, list[tuple[Event, bytes]]] = {}
        self._held_count = 0
        # run_id -> the last seq a replay sent: live events up to it are duplicates. (An event
        # is readable from the store a moment before it is published, so a replay can send it
        # and the live copy arrive after the release.) Bounded: only recent replays matter.
        self._floors: OrderedDict[str, int] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.state = ConnectionState.OPEN
        self.close_code: int | None = None

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def start(self) -> None:
        """Start writing: what was queued before goes out first."""
        self._started = True
        self._wake()

    # -- producing ----------------------------------------------------------------------------

    def offer_event(self, event: Event, payload: bytes) -> bool:
        """Queue one event (already serialized) unless this connection filters it out."""
        if self.run_filter is not None and event.run_id != self.run_filter:
            return False
        if self._floors is not None:
            floor = self._floors.get(event.run_id)
            if floor is not None and event.seq <= floor:
                return False
        held = self._holds.get(event.run_id)
        if held is not None:
            # Held events count toward the bound like queued ones: a client that stalls
            # while its replay is being sent must not make the hold grow without limit.
            if not self._admit(len(payload)):
                return False
            held.append((event, payload))
            self._buffered += len(payload)
            self._held_count += 1
            return True
        return self._enqueue(payload, event)

    def offer(self, payload: bytes) -> bool:
        """Queue a control message (ready, pong, error...)."""
        return self._enqueue(payload, None)

    def _admit(self, size: int) -> bool:
        """True if ``size`` more bytes fit the bound; else close as a slow consumer."""
        if self.state is not _OPEN:
            return False
        if (
            self._buffered + size > self._max_bytes
            or (len(self._queue) if self._queue else 0) + self._held_count >= self._max_messages
        ):
            self._slow_consumer()
            return False
        return True

    def _enqueue(self, payload: bytes, event: Event | None) -> bool:
        if not self._admit(len(payload)):
            return False
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append((payload, event))
        self._buffered += len(payload)
        self._wake()
        return True

    def _wake(self) -> None:
        """Start the writer task if frames wait and none runs (it ends when they are out)."""
        if self._writer is None and self._started and self._queue and self.state is _OPEN:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def _signal_drained(self) -> None:
        if self._drained is not None:
            self._drained.set()

    async def wait_for_room(self, size: int) -> bool:
        """Wait until ``size`` more bytes fit in half the bound, or nothing is queued.

        For a producer that can wait — a replay read page by page from the store — so that it
        goes at the socket's pace instead of tripping the slow-consumer close: a replay may be
        far larger than the bound. The other half stays free for live events arriving
        meanwhile. Returns False once the connection is not open. Nothing is queued by
        waiting, so cancelling it is safe.
        """
        while self.state is ConnectionState.OPEN:
            if not self._queue or self._buffered + size <= self._max_bytes // 2:
                return True
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            await self._drained.wait()
        return False

    def hold(self, run_id: str) -> None:
        """Buffer ``run_id``'s live events until :meth:`release` (used while replaying).

        Held events count toward the connection's bound, like queued ones.
        """
        self._holds.setdefault(run_id, [])

    def release(self, run_id: str, after_seq: int) -> None:
        """Send the held live events of ``run_id`` with ``seq > after_seq``, then go live;
        live events with ``seq <= after_seq`` arriving later are dropped as duplicates."""
        floors = self._floors
        if floors is None:
            floors = self._floors = OrderedDict()
        floors[run_id] = max(after_seq, floors.get(run_id, 0))
        floors.move_to_end(run_id)
        while len(floors) > MAX_FLOORS:
            floors.popitem(last=False)
        for event, payload in self._holds.pop(run_id, []):
            self._buffered -= len(payload)
            self._held_count -= 1
            if event.seq > after_seq:
                self._enqueue(payload, event)

    # -- lifecycle ----------------------------------------------------------------------------

    def _slow_consumer(self) -> None:
        log.info("closing slow consumer", extra={"user_id": self.user_id})
        if self._on_slow is not None:
            self._on_slow(self)
        self._begin_close(CLOSE_TRY_AGAIN_LATER, "slow consumer: resume from your last seq")

    def _begin_close(self, code: int, reason: str) -> None:
        if self.state is not ConnectionState.OPEN:
            return
        self.state = ConnectionState.CLOSING
        self.close_code = code
        self._queue = None
        self._buffered = 0
        self._holds.clear()
        self._held_count = 0
        self._signal_drained()
        asyncio.get_running_loop().create_task(self._close_transport(code, reason))

    async def _close_transport(self, code: int, reason: str) -> None:
        try:
            await self._transport.close(code, reason)
        except Exception:  # the peer may be gone already; closing is best effort
            log.debug("transport close failed", exc_info=True)
        finally:
            self.state = ConnectionState.CLOSED
            self._signal_drained()
            self._signal_closed()

    async def close_when_sent(self, code: int, reason: str, timeout_s: float) -> None:
        """Close with ``code`` once everything queued now is written (a last error message),
        or after ``timeout_s`` if the peer does not read it; then as :meth:`close`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.state is ConnectionState.OPEN and self._queue:
                    if self._drained is None:
                        self._drained = asyncio.Event()
                    self._drained.clear()
                    await self._drained.wait()
        await self.close(code, reason)

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close with ``code`` (idempotent) and wait until the transport is closed."""
        self._begin_close(code, reason)
        await self.wait_closed()
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def wait_closed(self) -> None:
        """Wait until the transport is closed (by :meth:`close` or the peer going away)."""
        if self.state is _CLOSED:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    def _signal_closed(self) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def mark_closed(self) -> None:
        """The peer went away: drop everything queued without writing it."""
        if self.state is ConnectionState.CLOSED:
            return
        self.state = ConnectionState.CLOSED
        self._queue = None
        self._buffered = 0
        self._holds.clear()
        self._held_count = 0
        self._signal_drained()
        self._signal_closed()

    async def _write_loop(self) -> None:
        try:
            while self.state is _OPEN:
                queue = self._queue
                if not queue:
                    # All written: the queue and this task end; the next frame makes both.
                    self._queue = None
                    self._writer = None
                    return
                payload, event = queue[0]
                await self._transport.send(payload)
                # Counted until written: the bound covers the frame in flight too (a close
                # meanwhile drops the queue).
                if queue is self._queue and queue and queue[0][0] is payload:
                    queue.popleft()
                    self._buffered -= len(payload)
                    self._signal_drained()
                if event is not None and self._on_sent is not None:
                    self._on_sent(event)
                del payload, event  # an idle connection keeps no sent frame alive
        except asyncio.CancelledError:
            raise
        except Exception:
            log.debug("connection send failed; closing", exc_info=True)
            self.mark_closed()
