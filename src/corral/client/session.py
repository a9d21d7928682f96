"""Every event of every run of one user, over one WebSocket that comes back after any drop.

:class:`Session` connects, signs in, and reads; when the socket drops (a network fault, a
server restart, 1013 for a slow reader, 1008 for an expired token) it reconnects with backoff,
asks the token provider for a new token, resumes every run it knows that has not finished,
and finds the runs that started while it was away. Events pass through a
:class:`~corral.client.order.RunOrder`, so each reaches the consumer once, in seq order.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from corral.client.discovery import RunFinder
from corral.client.errors import CorralAPIError, closed_error
from corral.client.order import RunOrder
from corral.client.socket import CLOSE_POLICY, open_socket, ws_url
from corral.client.transport import Http
from corral.client.types import Event, Run
from corral.errors import IllegalTransition

log = logging.getLogger("corral.client")

# The server closes a socket on a message over 64 KiB; a start near that goes over HTTP.
SOCKET_MAX_BYTES = 60 * 1024


class SessionState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(slots=True)
class _Start:
    message: bytes
    done: asyncio.Future[Run]


class _End:
    """Put in the queue when the session ends; the consumer then stops (or raises)."""


class Session:
    """``async with client.session() as session: async for event in session: ...``

    Iterating yields every event of every run of the user — from seq 1 for runs that were
    unfinished when the session opened (with ``resume_unfinished``) and for runs started
    while it is open — each once, in seq order per run. It ends when the session is closed,
    or raises :class:`CorralAPIError` when it cannot go on (``unauthorized``: the token was
    refused and there is no provider to ask for another).

    Backpressure: at most ``queue_size`` events wait for the consumer; then the socket is not
    read, the server closes it (1013) and the session resumes where the consumer is, so a
    slow consumer costs memory bounded by the queue. One consumer at a time.
    """

    def __init__(
        self,
        http: Http,
        base_url: str,
        *,
        resume_unfinished: bool = True,
        queue_size: int = 1000,
        open_timeout: float = 15.0,
    ) -> None:
        self._http = http
        self._url = ws_url(base_url)
        self._open_timeout = open_timeout
        self._queue: asyncio.Queue[Event | _End] = asyncio.Queue(queue_size)
        self._order = RunOrder()
        self._starts: dict[str, _Start] = {}
        self._state = SessionState.NEW
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._error: CorralAPIError | None = None
        self._finder = RunFinder(http, unfinished=resume_unfinished)
        self.user_id: str | None = None
        self.connects = 0

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def reconnects(self) -> int:
        """Sockets opened after the first one (drops recovered from)."""
        return max(0, self.connects - 1)

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Session:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Note the newest run (runs made later are this session's), connect and sign in;
        returns once the first socket is ready. Raises :class:`CorralAPIError` if the server
        refuses (or cannot be reached within the client's retries)."""
        if self._state is not SessionState.NEW:
            raise IllegalTransition("opening a session", "new", self._state.value)
        self._state = SessionState.OPEN
        try:
            await self._finder.start()  # runs made from now on are this session's
        except BaseException:
            await self.aclose()
            raise
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._task = loop.create_task(self._connection())
        try:
            await asyncio.shield(self._first)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the socket and stop reconnecting; pending ``start_run`` calls raise
        ``closed``, and iteration ends. Idempotent."""
        if self._state is SessionState.CLOSED:
            return
        self._state = SessionState.CLOSED
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None
        for start in self._starts.values():
            if not start.done.done():
                start.done.set_exception(closed_error("session"))
        self._starts.clear()
        self._end()

    def _end(self) -> None:
        """Let the consumer stop: the queue gets its end marker even when full."""
        while True:
            try:
                self._queue.put_nowait(_End())
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()

    def _fail(self, error: CorralAPIError) -> None:
        self._error = error
        if self._first is not None and not self._first.done():
            self._first.set_exception(error)
        self._end()

    # -- iterating ------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._state is SessionState.NEW:
            raise IllegalTransition("reading a session", "open", "new")
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # later calls end too
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        return item

    # -- commands -------------------------------------------------------------------------------

    async def start_run(
        self,
        agent: str,
        input: dict[str, Any],
        *,
        thread_id: str | None = None,
        client_ref: str | None = None,
        multitask: str | None = None,
        timeout_s: float | None = None,
    ) -> Run:
        """Start a run with a ``start_run`` message; returns the run object of ``run_accepted``.

        ``client_ref`` (one is made when absent) is the start's idempotency key: a start whose
        socket drops before the answer is sent again on the next socket, and the server answers
        the repeat with the first run — one run however often the network fails. A refusal
        raises :class:`CorralAPIError` with the HTTP route's code. A message too large for the
        socket goes over HTTP with the same key (one key space on the server).
        """
        if self._state is not SessionState.OPEN:
            raise (
                closed_error("session")
                if self._state is SessionState.CLOSED
                else (IllegalTransition("starting a run", "open", self._state.value))
            )
        ref = client_ref or f"py-{uuid.uuid4().hex}"
        body: dict[str, Any] = {"agent": agent, "input": input}
        if thread_id is not None:
            body["thread_id"] = thread_id
        if multitask is not None:
            body["multitask"] = multitask
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        message = orjson.dumps({"type": "start_run", **body, "client_ref": ref})
        if len(message) > SOCKET_MAX_BYTES:
            run = cast(
                Run,
                await self._http.request(
                    "POST", "/v1/runs", json=body, headers={"Idempotency-Key": ref}, retry=True
                ),
            )
            self._order.track(run["run_id"])
            await self.resume(run["run_id"])
            return run
        pending = self._starts.get(ref)
        if pending is None:
            future: asyncio.Future[Run] = asyncio.get_running_loop().create_future()
            pending = self._starts[ref] = _Start(message, future)
            if self._ws is not None:
                await self._send(self._ws, message)  # if it drops, the next socket sends it
        try:
            return await asyncio.shield(pending.done)
        finally:
            if pending.done.done():
                self._starts.pop(ref, None)

    async def resume(self, run_id: str, after: int = 0) -> None:
        """Deliver ``run_id``'s events after ``after`` too (a run this session did not see
        start, found some other way). A run it already follows is left as it is."""
        if run_id in self._order:
            return
        self._order.track(run_id, after)
        if self._ws is not None:
            await self._send_resume(self._ws, run_id, after)

    # -- the connection -------------------------------------------------------------------------

    async def _connection(self) -> None:
        try:
            await self._reconnecting()
        except Exception as exc:  # a bug here must end the iteration, not hang the consumer
            log.exception("session: stopped")
            self._fail(CorralAPIError(None, "network_error", f"the session stopped: {exc!r}"))

    async def _reconnecting(self) -> None:
        backoff = self._http.backoff
        failures = 0
        while self._state is SessionState.OPEN:
            refused: CorralAPIError | None = None
            try:
                auth = self._http.auth
                token = await (auth.fresh() if self.connects or failures else auth.current())
                ws, ready = await open_socket(self._url, token, open_timeout=self._open_timeout)
            except CorralAPIError as exc:
                refused = exc
            except (OSError, TimeoutError, WebSocketException) as exc:
                refused = CorralAPIError(
                    None, "network_error", f"cannot connect to {self._url}: {exc!r}"
                )
            else:
                failures = 0
                code = await self._serve(ws, ready)
                if code == CLOSE_POLICY and not self._http.auth.refreshable:
                    self._fail(
                        CorralAPIError(
                            401,
                            "unauthorized",
                            "the server closed the socket: the token was refused or expired; "
                            "pass a token_provider to sign in again on its own",
                        )
                    )
                    return
            if refused is not None:
                if refused.code == "unauthorized" and not self._http.auth.refreshable:
                    self._fail(refused)
                    return
                failures += 1
                if self.connects == 0 and failures > backoff.retries:
                    self._fail(refused)  # never got in: tell the caller of open()
                    return
                log.info("session: %s; reconnecting", refused.message)
            await asyncio.sleep(backoff.delay(min(failures, 8)))

    async def _serve(self, ws: ClientConnection, ready: bytes) -> int:
        """Use one signed-in socket until it closes; returns the close code."""
        self._ws = ws
        self.connects += 1
        doc = orjson.loads(ready)
        self.user_id = doc.get("user_id") if isinstance(doc, dict) else None
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        gaps: set[str] = set()  # runs this socket was asked to resume because of a gap
        discovery = asyncio.get_running_loop().create_task(self._discover(ws))
        try:
            for run in self._order.unfinished():
                await self._send_resume(ws, run.run_id, run.last)
            for start in list(self._starts.values()):
                await self._send(ws, start.message)
            while True:
                raw = await ws.recv(decode=False)
                await self._handle(ws, raw if isinstance(raw, bytes) else raw.encode(), gaps)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else 1006
        finally:
            self._ws = None
            discovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await discovery
            ws.transport.abort()

    async def _handle(self, ws: ClientConnection, raw: bytes, gaps: set[str]) -> None:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        kind = doc.get("type")
        run_id, seq = doc.get("run_id"), doc.get("seq")
        if isinstance(run_id, str) and isinstance(seq, int) and isinstance(kind, str):
            deliver, gap = self._order.offer(cast(Event, doc))
            for event in deliver:
                await self._queue.put(event)
            if gap and run_id not in gaps:
                gaps.add(run_id)
                await self._send_resume(ws, run_id, self._order.track(run_id).last)
            elif not gap:
                gaps.discard(run_id)
        elif kind == "run_accepted":
            run = doc.get("run")
            start = self._starts.get(str(doc.get("client_ref")))
            if isinstance(run, dict) and isinstance(run.get("run_id"), str):
                progress = self._order.track(run["run_id"])
                # A repeated start is answered with the first run, which may have emitted
                # events while no socket was open: fetch what this one has not seen.
                last_seq = run.get("last_seq")
                if isinstance(last_seq, int) and last_seq > progress.last and not progress.done:
                    await self._send_resume(ws, run["run_id"], progress.last)
                if start is not None and not start.done.done():
                    start.done.set_result(cast(Run, run))
        elif kind == "error":
            start = self._starts.get(str(doc.get("client_ref")))
            if start is not None and not start.done.done():
                start.done.set_exception(CorralAPIError.from_message(doc))
            else:
                log.info("session: the server reported %s", doc)

    async def _send(self, ws: ClientConnection, message: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(message, text=True)

    async def _send_resume(self, ws: ClientConnection, run_id: str, after: int) -> None:
        await self._send(ws, orjson.dumps({"type": "resume", "run_id": run_id, "after": after}))

    # -- finding runs over HTTP -----------------------------------------------------------------

    async def _discover(self, ws: ClientConnection) -> None:
        """Resume the runs :class:`RunFinder` finds that this session does not follow yet.

        Runs concurrently with the socket's reading; a look that fails is made again on the
        next socket, over the same span."""
        try:
            runs = await self._finder.look()
        except CorralAPIError as exc:
            log.info("session: could not list runs to resume (%s); trying on the next socket", exc)
            return
        for run in runs:
            if run["run_id"] not in self._order:
                self._order.track(run["run_id"])
                await self._send_resume(ws, run["run_id"], 0)
