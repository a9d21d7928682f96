"""``/v1/ws``: authentication, live events of all the user's runs, and client commands."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from corral.auth.identity import Identity
from corral.core.connection import CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_AGAIN_LATER, Connection
from corral.core.events import dumps, loads
from corral.core.pool import ConnectionLimitError
from corral.errors import (
    CorralError,
    InvalidRequest,
    ServiceUnavailable,
    Unauthorized,
    details_from,
)
from corral.runs.service import InputAnswer, RunRequest, check_client_ref
from corral.server.auth_request import auth_request, with_token
from corral.server.errors import answer_for
from corral.server.params import MAX_INT
from corral.server.replay import replay

if TYPE_CHECKING:
    from corral.server.runtime import Runtime

log = logging.getLogger("corral.ws")

EXPIRED = "your sign-in has expired; sign in again and resume from your last seq"
# How long an expiring socket waits for its error message to be written before it closes.
EXPIRY_FLUSH_S = 2.0


class _SocketTransport:
    __slots__ = ("ws",)

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        await self.ws.send({"type": "websocket.send", "text": data.decode()})

    async def close(self, code: int, reason: str) -> None:
        if self.ws.application_state is WebSocketState.CONNECTED:
            await self.ws.close(code, reason)


def origin_allowed(ws: WebSocket, allowed: list[str]) -> bool:
    """No Origin (not a browser), the same origin, or one in CORRAL_ALLOWED_ORIGINS."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True
    if "*" in allowed or origin in allowed:
        return True
    host = ws.headers.get("host", "")
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == host.lower()


def error_message(code: str, message: str, **extra: Any) -> bytes:
    return dumps({"type": "error", "code": code, "message": message, **extra})


async def websocket_endpoint(ws: WebSocket) -> None:
    runtime: Runtime | None = ws.app.state.runtime
    if runtime is None:
        await ws.close(1013)
        return
    settings = runtime.settings
    if not origin_allowed(ws, settings.allowed_origins):
        await ws.close(CLOSE_POLICY)  # before accept: the server answers the upgrade with 403
        return
    await ws.accept()
    identity = await _authenticate(ws, runtime)
    if identity is None:
        return
    conn = Connection(
        identity.user_id,
        _SocketTransport(ws),
        max_buffered_bytes=settings.ws_max_buffered_bytes,
        on_slow_consumer=runtime.metrics.count_slow_consumer,
        on_sent=runtime.metrics.observe_delivery,
    )
    conn.offer(dumps({"type": "ready", "user_id": identity.user_id}))
    try:
        async with runtime.bridge.session(conn):
            conn.start()
            await _Session(ws, runtime, conn, identity).serve()
    except ConnectionLimitError as exc:
        await _refuse(ws, "rate_limited", str(exc))
    finally:
        conn.mark_closed()
        await conn.close()


async def _refuse(ws: WebSocket, code: str, message: str, close_code: int = CLOSE_POLICY) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(error_message(code, message).decode())
        await ws.close(close_code, message[:120])


async def _authenticate(ws: WebSocket, runtime: Runtime) -> Identity | None:
    """The user of the upgrade request (headers, cookies), else of a first ``auth`` message
    sent within the time limit; None — after an ``error`` and a close — when neither signs in.

    A refused credential is ``unauthorized`` and 1008 (also one in the upgrade header: a
    browser cannot read the status of a failed upgrade); an authenticator that cannot decide
    now is ``unavailable`` and 1013, the client retries.
    """
    request = auth_request(ws, "ws")
    try:
        identity = await runtime.signin.identify(request)
        if identity is not None:
            return identity
        token = await _auth_message(ws, runtime)
        if token is None:
            return None
        return await runtime.signin.require(with_token(request, token))
    except Unauthorized as exc:
        await _refuse(ws, "unauthorized", exc.message)
    except ServiceUnavailable as exc:
        await _refuse(ws, "unavailable", exc.message, CLOSE_TRY_AGAIN_LATER)
    return None


async def _auth_message(ws: WebSocket, runtime: Runtime) -> str | None:
    """The token of the first message, which must be ``{"type": "auth", "token": "..."}``;
    None after refusing (or when the peer left)."""
    limit = runtime.settings.ws_auth_timeout_s
    try:
        async with asyncio.timeout(limit):
            message = await ws.receive()
    except TimeoutError:
        await _refuse(
            ws, "unauthorized", f'authenticate within {limit:g} s: send {{"type": "auth"}}'
        )
        return None
    if message["type"] == "websocket.disconnect":
        return None
    raw = message.get("text") or message.get("bytes") or b""
    try:
        doc = loads(raw) if len(raw) <= runtime.settings.ws_max_message_bytes else None
    except orjson.JSONDecodeError:
        doc = None
    if (
        not isinstance(doc, dict)
        or doc.get("type") != "auth"
        or not isinstance(doc.get("token"), str)
    ):
        await _refuse(
            ws, "unauthorized", 'the first message must be {"type": "auth", "token": "..."}'
        )
        return None
    token: str = doc["token"]
    return token


class _Session:
    """One authenticated socket: the socket is read all the time, and client messages are
    handled one at a time, in order (a ``resume``'s replay before the next message), by a
    handler task that exists only while there are messages to handle — an idle socket holds
    no task, no queue and no frame for them.

    So a close during a long replay is answered at once: the handler (and its replay) is
    cancelled. More than ``INBOX`` messages waiting for the
    handler stop the reading until it has handled them (backpressure).

    When the identity's sign-in expires (contract §2) the socket gets an ``unauthorized``
    error and is closed with 1008; a command read after that moment is refused the same way.
    """

    INBOX = 64  # messages read ahead of the handler; then reading waits (backpressure)

    def __init__(
        self, ws: WebSocket, runtime: Runtime, conn: Connection, identity: Identity
    ) -> None:
        self.ws = ws
        self.runtime = runtime
        self.conn = conn
        self.identity = identity
        self.user_id = conn.user_id
        self._inbox: deque[dict[str, Any]] | None = None  # exists while messages wait
        self._handler: asyncio.Task[None] | None = None
        self._ended = False  # the handler saw the socket go, or the sign-in expire
        self._expiring = False
        self._deadline_passed = False

    async def serve(self) -> None:
        remaining = self.runtime.signin.remaining_s(self.identity)
        task = asyncio.current_task()
        assert task is not None
        # Wall-clock expiry turned into the loop's clock once, here; None: it never expires.
        # A bare timer handle (what asyncio.timeout does, with less to hold per idle socket).
        timer = None
        if remaining is not None:
            loop = asyncio.get_running_loop()
            timer = loop.call_at(loop.time() + remaining, self._deadline, task)
        try:
            await self._read()
        except asyncio.CancelledError:
            # Cancelled by the deadline alone: the sign-in expired; otherwise cancelled.
            if not self._deadline_passed or task.uncancel() > 0:
                raise
            await self._expire()
        finally:
            if timer is not None:
                timer.cancel()
            handler = self._handler
            if handler is not None:
                handler.cancel()
                await asyncio.wait({handler})

    def _deadline(self, task: asyncio.Task[Any]) -> None:
        self._deadline_passed = True
        task.cancel()

    def _expired(self) -> bool:
        return self.runtime.signin.expired(self.identity)

    async def _expire(self) -> None:
        """Tell the client its sign-in expired, then close with 1008 once that is written.
        Both the reader (at the deadline) and the handler (a command read just before it) may
        get here: the client is told once."""
        if not self._expiring:
            self._expiring = True
            self.conn.offer(error_message("unauthorized", EXPIRED))
        await self.conn.close_when_sent(CLOSE_POLICY, "sign-in expired", EXPIRY_FLUSH_S)

    async def _read(self) -> None:
        limit = self.runtime.settings.ws_max_message_bytes
        conn = self.conn
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            if len(raw) > limit:
                await conn.close(CLOSE_TOO_BIG, "message over 64 KiB")
                return
            try:
                doc = loads(raw)
            except orjson.JSONDecodeError:
                conn.offer(error_message("validation_error", "the message is not valid JSON"))
                continue
            if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
                conn.offer(
                    error_message(
                        "validation_error", 'a message is a JSON object with a string "type"'
                    )
                )
                continue
            if self._ended:
                continue  # the socket is closing: nothing more is handled
            inbox = self._inbox
            if inbox is None:
                inbox = self._inbox = deque()
            inbox.append(doc)
            handler = self._handler
            if handler is None or handler.done():
                self._handler = asyncio.get_running_loop().create_task(self._handle())
            elif len(inbox) >= self.INBOX:
                await asyncio.wait({handler})  # it returns once the inbox is empty

    async def _handle(self) -> None:
        """Handle what the inbox holds, in order, then end (the reader starts another)."""
        inbox = self._inbox
        while inbox:
            doc = inbox.popleft()
            if self._expired():  # read just before the deadline: refused, never run
                self._ended = True
                inbox.clear()
                await self._expire()
                return
            try:
                await self._dispatch(doc)
            except CorralError as exc:
                self._answer_error(exc, doc)
            except WebSocketDisconnect:
                self._ended = True
                inbox.clear()
                return
            except Exception:
                log.exception("websocket message failed", extra={"user_id": self.user_id})
                self.conn.offer(error_message("unavailable", "the server could not handle that"))
        self._inbox = None  # empty: an idle socket holds none

    def _answer_error(self, exc: CorralError, doc: dict[str, Any]) -> None:
        answer = answer_for(exc)
        if answer is None:
            log.error("websocket message failed: %r", exc, extra={"user_id": self.user_id})
            self.conn.offer(error_message("unavailable", "the server could not handle that"))
            return
        extra: dict[str, Any] = {}
        ref = doc.get("client_ref")
        # Echoed only when it is one (a bad client_ref is the error being answered): whatever
        # else a client sends there must not make the answer itself fail.
        if doc.get("type") == "start_run" and isinstance(ref, str) and ref:
            with contextlib.suppress(InvalidRequest):
                extra["client_ref"] = check_client_ref(ref)
        self.conn.offer(dumps(answer.ws_message(**extra)))

    async def _dispatch(self, doc: dict[str, Any]) -> None:
        kind = doc["type"]
        if kind == "ping":
            self.conn.offer(b'{"type":"pong"}')
        elif kind == "start_run":
            await self._start_run(doc)
        elif kind == "cancel_run":
            run_id = doc.get("run_id")
            if not isinstance(run_id, str) or not run_id:
                raise InvalidRequest(
                    "cancel_run needs a run_id",
                    [{"field": "run_id", "message": "required", "type": "missing"}],
                )
            # Not waiting for the run to end: this socket keeps reading; the terminal event
            # arrives on it like any other.
            await self.runtime.service.cancel(self.user_id, run_id, wait=False)
        elif kind == "send_input":
            await self._send_input(doc)
        elif kind == "resume":
            await self._resume(doc)
        elif kind == "auth":
            raise InvalidRequest("this connection is already authenticated")
        else:
            raise InvalidRequest(
                f"unknown message type {kind[:40]!r}: use start_run, send_input, cancel_run, "
                "resume or ping"
            )

    async def _start_run(self, doc: dict[str, Any]) -> None:
        """Start a run; a ``client_ref`` is its idempotency key (contract §5), in the same
        per-user key space as HTTP's ``Idempotency-Key``: a repeated ``start_run`` with it
        starts nothing and is answered with the first run."""
        ref = check_client_ref(doc.get("client_ref"))
        body = {k: v for k, v in doc.items() if k not in ("type", "client_ref")}
        try:
            request = RunRequest.model_validate(body)
        except ValidationError as exc:
            raise InvalidRequest("start_run is not valid", details_from(exc)) from None
        record, created = await self.runtime.service.start(self.identity, request, ref)
        if created:
            self.runtime.metrics.runs_submitted.labels("ws").inc()
        self.conn.offer(dumps({"type": "run_accepted", "client_ref": ref, "run": record.to_api()}))

    async def _send_input(self, doc: dict[str, Any]) -> None:
        """Answer a waiting run; nothing is sent back on success (its ``input_received``
        arrives like any event), a refusal is an ``error`` with the HTTP route's code."""
        run_id = doc.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            raise InvalidRequest(
                "send_input needs a run_id",
                [{"field": "run_id", "message": "required", "type": "missing"}],
            )
        body = {k: v for k, v in doc.items() if k not in ("type", "run_id", "client_ref")}
        try:
            answer = InputAnswer.model_validate(body)
        except ValidationError as exc:
            raise InvalidRequest("send_input is not valid", details_from(exc)) from None
        await self.runtime.service.send_input(self.user_id, run_id, answer)

    async def _resume(self, doc: dict[str, Any]) -> None:
        run_id, after = doc.get("run_id"), doc.get("after", 0)
        if not isinstance(run_id, str) or not run_id:
            raise InvalidRequest(
                "resume needs a run_id",
                [{"field": "run_id", "message": "required", "type": "missing"}],
            )
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= MAX_INT:
            raise InvalidRequest(
                f"resume's after must be a whole number from 0 to {MAX_INT}",
                [{"field": "after", "message": "must be an integer >= 0", "type": "int_type"}],
            )
        await self.runtime.service.get_run(self.user_id, run_id)  # NotFound for not theirs
        await replay(self.runtime.service, self.conn, run_id, after)
