"""One WebSocket connection of a simulated user: authenticate, read, verify, reconnect, resume.

The read loop is the loadtest's hot path (every frame of every connection passes through
``_on_frame``), so it does one ``orjson.loads``, two ``bytes.count`` calls for the canary check
and a few dict operations per frame, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from corral.client import CorralAPIError, open_socket
from corral.errors import IllegalTransition
from corral.loadtest.config import LoadtestConfig
from corral.loadtest.metrics import Stats, clock
from corral.loadtest.verify import ConnectionVerifier, Violations

if TYPE_CHECKING:
    from corral.loadtest.user import SimulatedUser

RECONNECT_BACKOFF_S = (0.05, 0.25, 1.0)
PING = b'{"type":"ping"}'
CLOSE_TIMEOUT_S = 5.0
MAX_FRAME_BYTES = 16 * 1024 * 1024
CLOSE_ABNORMAL = 1006


@dataclass(frozen=True, slots=True)
class Shared:
    """What every user and connection of one loadtest share; made by the runner."""

    config: LoadtestConfig
    http: httpx.AsyncClient
    stats: Stats
    violations: Violations
    connect_gate: asyncio.Semaphore


class SlotState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


class Slot:
    """The n-th connection of a user: one logical stream, possibly over several sockets.

    A socket that closes unexpectedly counts as an error (``ws_close:<code>``); the slot then
    reconnects (``reconnect_attempts`` times, with back-off) and sends ``resume`` for every
    run of its user it has not received completely, so verification covers the stream the
    user was promised, not just one socket. A slot that cannot reconnect becomes ``FAILED``.
    """

    def __init__(self, user: SimulatedUser, index: int, shared: Shared) -> None:
        self.user = user
        self.index = index
        self.label = f"{user.user_id}#{index}"
        self.verifier = ConnectionVerifier(user.user_id, user.canary, self.label, shared.violations)
        self.state = SlotState.NEW
        self.ever_opened = False
        self.connected_since = 0.0  # when the current socket's ``ready`` arrived
        self.terminals: dict[str, float] = {}  # run id → arrival of its first terminal event
        self._shared = shared
        self._stats = shared.stats
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pongs: deque[asyncio.Future[bool]] = deque()
        self._steady = asyncio.Event()  # set unless reconnecting
        self._counted = False  # whether the open socket is in ``stats.connections_open``
        self._dropping = False  # the socket was dropped on purpose (not a server close)
        self._chaos: asyncio.Task[None] | None = None
        self.refs: set[str] = set()  # client_refs of start_run messages awaiting run_accepted

    @property
    def counts(self) -> bool:
        """Whether runs must reach this connection: it opened and has not failed."""
        return self.ever_opened and self.state is not SlotState.FAILED

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> bool:
        """Connect, authenticate with a first ``auth`` message, wait for ``ready``, then read.

        Returns False (the error counted) when the server refuses or does not answer in time.
        """
        if self.state is not SlotState.NEW:
            raise IllegalTransition("opening a loadtest connection", "new", self.state.value)
        ws = await self._connect()
        if ws is None:
            self.state = SlotState.FAILED
            self._steady.set()
            return False
        self.ever_opened = True
        self._opened(ws)
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read_loop(ws))
        if self._shared.config.drop_every_s > 0:
            self._chaos = loop.create_task(self._drop_now_and_then())
        return True

    async def _drop_now_and_then(self) -> None:
        """Drop the socket (abort: no close handshake) at random moments, around every
        ``drop_every_s``; the read loop reconnects and resumes as after any lost socket."""
        every = self._shared.config.drop_every_s
        while True:
            # Chaos timing is the test's input, not synchronisation.
            await asyncio.sleep(random.uniform(0.5 * every, 1.5 * every))
            ws = self._ws
            if ws is None or self.state is not SlotState.OPEN:
                continue
            self._dropping = True
            self._stats.drops += 1
            ws.transport.abort()

    async def close(self) -> None:
        """Close the socket and stop reading. Idempotent."""
        if self.state in (SlotState.CLOSING, SlotState.CLOSED):
            return
        failed = self.state is SlotState.FAILED
        self.state = SlotState.CLOSING
        # Stop the reader first: it may be reconnecting, and must not open a socket after this.
        if self._chaos is not None:
            self._chaos.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._chaos
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), CLOSE_TIMEOUT_S)
            self._ws = None
        self._dropped()
        self.state = SlotState.FAILED if failed else SlotState.CLOSED
        self._steady.set()

    def _opened(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.state = SlotState.OPEN
        self.connected_since = clock()
        self._stats.connections_open += 1
        self._counted = True
        self._steady.set()

    def _dropped(self) -> None:
        """The current socket is gone: nothing sent on it will be answered."""
        if self._counted:
            self._counted = False
            self._stats.connections_open -= 1
        self._fail_pongs()
        if self.refs:
            self.user.abandon_starts(self.refs)
            self.refs.clear()

    async def _connect(self) -> ClientConnection | None:
        """A signed-in socket (corral.client's ``open_socket``: connect, ``auth``, ``ready``),
        or None with the error counted. The ``ready`` frame is checked like any other."""
        config, stats = self._shared.config, self._stats
        try:
            async with self._shared.connect_gate:
                ws, raw = await open_socket(
                    config.ws_url,
                    self.user.token,
                    open_timeout=config.timeout_s,
                    ping_interval=None,  # the server pings; the client answers
                    max_size=MAX_FRAME_BYTES,
                    max_queue=64,
                    close_timeout=CLOSE_TIMEOUT_S,
                )
        except CorralAPIError as exc:
            stats.error(f"ws_error:{exc.code}", f"{self.label}: {exc.message}")
            return None
        except TimeoutError:
            stats.error(
                "ws_connect:timeout", f"{self.label}: no ready within {config.timeout_s:g} s"
            )
            return None
        except ConnectionClosed as exc:
            stats.error(f"ws_close:{_close_code(exc)}", f"{self.label} while connecting: {exc}")
            return None
        except InvalidStatus as exc:
            stats.error(f"ws_connect:http_{exc.response.status_code}")
            return None
        except (OSError, InvalidHandshake) as exc:
            stats.error(f"ws_connect:{type(exc).__name__}", f"{self.label}: {exc!r}")
            return None
        self._stats.frames += 1
        self.verifier.check_frame(raw)
        self.verifier.check_ready(_parse(raw).get("user_id"))
        return ws

    async def _read_loop(self, ws: ClientConnection) -> None:
        while True:
            code = await self._read(ws)
            self._dropped()
            if self.state is SlotState.CLOSING:
                return
            if self._dropping:  # dropped on purpose: not an error of the server's
                self._dropping = False
            else:
                self._stats.error(f"ws_close:{code}", f"{self.label}: closed by the server")
            reconnected = await self._reconnect()
            if reconnected is None:
                self.state = SlotState.FAILED
                self._ws = None
                self._steady.set()
                self.user.slot_failed(self)
                return
            ws = reconnected

    async def _read(self, ws: ClientConnection) -> int:
        """Hand every frame to ``_on_frame`` until the socket closes; returns the close code."""
        on_frame = self._on_frame
        try:
            while True:
                raw = await ws.recv(decode=False)
                on_frame(raw if isinstance(raw, bytes) else raw.encode())
        except ConnectionClosed as exc:
            return _close_code(exc)

    async def _reconnect(self) -> ClientConnection | None:
        self.state = SlotState.RECONNECTING
        self._steady.clear()
        self._stats.reconnects += 1
        for attempt in range(self._shared.config.reconnect_attempts):
            # Back-off between attempts is client behaviour, not test synchronisation.
            await asyncio.sleep(RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)])
            ws = await self._connect()
            if ws is not None:
                self._opened(ws)
                for run_id in list(self.user.runs):
                    if not self.verifier.is_complete(run_id):
                        await self.resume(run_id)
                return ws
        return None

    # -- sending ------------------------------------------------------------------------------

    async def send(self, payload: bytes) -> bool:
        """Send one text frame; False if the socket is not open (the caller decides)."""
        ws = self._ws
        if ws is None or self.state is not SlotState.OPEN:
            return False
        try:
            await ws.send(payload, text=True)
        except ConnectionClosed:
            return False
        return True

    async def resume(self, run_id: str) -> None:
        """Ask for ``run_id``'s events after the last one received in order."""
        after = self.verifier.resyncing(run_id)
        await self.send(orjson.dumps({"type": "resume", "run_id": run_id, "after": after}))

    async def settle(self) -> bool:
        """Wait until everything the server queued for this connection so far has arrived.

        A ``ping`` is answered after every message the server handled before it, including a
        ``resume``'s replay, and the answer travels behind them: its ``pong`` is a barrier.
        Returns False when the connection failed or the pong did not come in time.
        """
        timeout = self._shared.config.timeout_s
        for _ in range(self._shared.config.reconnect_attempts + 1):
            try:
                await asyncio.wait_for(self._steady.wait(), timeout)
            except TimeoutError:
                return False
            if self.state is not SlotState.OPEN:
                return False
            pong: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._pongs.append(pong)
            if not await self.send(PING):
                continue
            try:
                if await asyncio.wait_for(pong, timeout):
                    return True
            except TimeoutError:
                self._stats.error("timeout:pong")
                return False
        return False

    def _fail_pongs(self) -> None:
        while self._pongs:
            pong = self._pongs.popleft()
            if not pong.done():
                pong.set_result(False)

    # -- receiving ----------------------------------------------------------------------------

    def _on_frame(self, raw: bytes) -> None:
        stats = self._stats
        stats.frames += 1
        stats.bytes += len(raw)
        self.verifier.check_frame(raw)
        msg = _parse(raw)
        kind = msg.get("type")
        seq = msg.get("seq")
        if seq is not None:
            run_id = msg.get("run_id")
            if not isinstance(run_id, str) or not isinstance(seq, int) or not isinstance(kind, str):
                stats.error("ws_frame:malformed_event")
                return
            stats.events += 1
            call_id = None
            if kind == "tool_executing" or kind == "tool_completed":
                data = msg.get("data")
                call_id = data.get("call_id") if isinstance(data, dict) else None
            if self.verifier.on_event(run_id, seq, kind, call_id):
                now = clock()
                self.terminals[run_id] = now
                self.user.on_terminal(run_id, kind, now)
            elif kind == "agent_started":
                self.user.on_agent_started(run_id)
        elif kind == "run_accepted":
            self.user.on_run_accepted(msg)
        elif kind == "pong":
            if self._pongs:
                pong = self._pongs.popleft()
                if not pong.done():
                    pong.set_result(True)
        elif kind == "error":
            self.user.on_ws_error(msg)
        elif kind == "ready":
            self.verifier.check_ready(msg.get("user_id"))
        else:
            stats.error(f"ws_frame:unexpected_{str(kind)[:40]}")


def _parse(raw: bytes) -> dict[str, object]:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"type": "not_json"}
    return msg if isinstance(msg, dict) else {"type": "not_an_object"}


def _close_code(exc: ConnectionClosed) -> int:
    return exc.rcvd.code if exc.rcvd is not None else CLOSE_ABNORMAL
