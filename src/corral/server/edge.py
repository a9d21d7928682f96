"""The server's edge: what a TCP connection may hold before it is a request (contract §3).

uvicorn parses HTTP (httptools) and WebSocket handshakes (websockets' sans-I/O protocol);
these subclasses add what its settings lack:

- **A deadline for a complete request head** (or WebSocket upgrade): ``request_timeout_s``
  after the accept, and after each response on a keep-alive connection. uvicorn's keep-alive
  timer alone does not hold: any byte cancels it, so a byte every few seconds — or a request
  head that never ends — kept a connection open for good.
- **Limits on the head, checked as bytes arrive**: over 100 header fields or 16 KiB of them
  → 431, a request target over 8 KiB → 414, and a head still unfinished past the sum of those
  → 431 at once (httptools buffers a single endless line without bound; uvicorn never answers).
- **A handshake websockets refuses is answered**: a 9 KB header line, 129 headers or a POST
  upgrade made websockets queue a refusal that uvicorn never wrote, leaving the socket open
  without a byte sent.
- **At most ``max_connections_per_ip`` open connections per client address**; one more is
  answered 429 and closed at once, before it costs more than its descriptor for a moment.

Everything runs in protocol callbacks on the event loop: nothing awaits and nothing needs a
lock. The per-address counts live in one :class:`Edge` per server, made by
:func:`edge_protocols` and bound to that server's protocol classes.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any, ClassVar, NamedTuple, NoReturn, cast

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import SecurityError

from corral.server.errors import error_answer
from corral.server.request_id import new_request_id
from corral.settings import Settings

log = logging.getLogger("corral.edge")

MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024
MAX_TARGET_BYTES = 8 * 1024
# A header line counts as on the wire: name, ": ", value, CRLF.
HEADER_LINE_OVERHEAD = 4
# What an unfinished head may hold: the limits above, the method, the version and the blank
# line. A head within the limits never reaches it, so it only cuts short what already broke one.
MAX_HEAD_BYTES = MAX_HEADER_BYTES + MAX_TARGET_BYTES + 1024
# uvicorn's default, stated: an idle keep-alive connection closes this soon after a response.
KEEP_ALIVE_TIMEOUT_S = 5


class Edge:
    """What the connections of one server share: its limits, when each connection was
    accepted, and how many each client address holds open.

    Made once per server by :func:`edge_protocols`. Its methods are called from protocol
    callbacks on the server's event loop, one at a time, so it needs no lock.
    """

    def __init__(self, *, request_timeout_s: float, max_connections_per_ip: int) -> None:
        self.request_timeout_s = request_timeout_s
        self.max_connections_per_ip = max_connections_per_ip
        self._open: dict[str, int] = {}
        # Keyed by transport: an upgraded connection changes protocol, not transport, so the
        # WebSocket protocol finds the accept time and releases the slot the HTTP one took.
        self._holders: dict[object, tuple[str | None, float]] = {}
        self._refusing: set[str] = set()

    def admit(self, transport: object, address: str | None, accepted_at: float) -> bool:
        """Count a new connection; False (nothing counted) when its address already holds
        the maximum. ``address`` is None for a Unix socket, which is never refused."""
        if address is not None:
            held = self._open.get(address, 0)
            if 0 < self.max_connections_per_ip <= held:  # 0 turns the limit off
                if address not in self._refusing:  # one warning per episode, not per connection
                    self._refusing.add(address)
                    log.warning(
                        "refusing connections from %s: it holds %d open "
                        "(raise CORRAL_MAX_CONNECTIONS_PER_IP if that is a proxy)",
                        address,
                        held,
                    )
                return False
            self._open[address] = held + 1
        self._holders[transport] = (address, accepted_at)
        return True

    def accepted_at(self, transport: object) -> float | None:
        """The loop time ``transport`` was admitted at; None if it was not (or is released)."""
        holder = self._holders.get(transport)
        return holder[1] if holder is not None else None

    def release(self, transport: object) -> None:
        """Forget a closed connection. Idempotent; a refused one was never counted."""
        address, _ = self._holders.pop(transport, (None, 0.0))
        if address is None:
            return
        held = self._open[address] - 1
        if held:
            self._open[address] = held
        else:
            del self._open[address]
        self._refusing.discard(address)

    def open_connections(self, address: str) -> int:
        return self._open.get(address, 0)


def error_response(code: str, message: str, headers: tuple[str, ...] = ()) -> bytes:
    """A whole HTTP/1.1 answer in the contract's error shape, closing the connection."""
    error = error_answer(code, message)
    body = orjson.dumps(error.body())
    head = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


TOO_MANY_CONNECTIONS = error_response(
    "rate_limited",
    "this address already holds as many open connections as the server allows; "
    "close some (or reuse them) and retry",
    ("retry-after: 1",),
)
HEADERS_TOO_LARGE = error_response(
    "headers_too_large",
    f"the request carries over {MAX_HEADERS} header fields or over "
    f"{MAX_HEADER_BYTES // 1024} KiB of them: send fewer or shorter headers",
)
TARGET_TOO_LONG = error_response(
    "uri_too_long",
    f"the request target is over {MAX_TARGET_BYTES // 1024} KiB: shorten the path or query",
)
BAD_UPGRADE = error_response(
    "bad_request",
    "this is not a valid WebSocket upgrade: send GET with the headers of RFC 6455",
)


def with_request_id(answer: bytes) -> bytes:
    """A whole answer of :func:`error_response` with a new ``x-request-id`` header: answers
    made here, before the app, carry one like every other response (contract §13)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return head + b"\r\nx-request-id: " + new_request_id().encode() + b"\r\n\r\n" + body


def _drop(transport: asyncio.Transport) -> None:
    """Close now: gracefully when nothing waits to be written, else abort — a peer that does
    not read would hold a graceful close (and its descriptor) open for good."""
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()


class _HeadRefused(Exception):
    """Raised from a parser callback to stop httptools; the answer is already chosen."""


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head deadline, head limits and the address cap.

    Use the per-server subclass made by :func:`edge_protocols` (it binds ``edge``).
    """

    edge: ClassVar[Edge]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._deadline: asyncio.TimerHandle | None = None
        self._answer: bytes | None = None  # sent instead of uvicorn's 400 when a limit broke
        self._in_head = True  # the bytes arriving now belong to a request head
        self._head_bytes = 0
        self._target_bytes = 0
        self._header_count = 0
        self._header_bytes = 0

    # -- connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(cast(asyncio.Transport, transport))
        address = self.client[0] if self.client else None
        if not self.edge.admit(transport, address, self.loop.time()):
            self._answer_and_close(TOO_MANY_CONNECTIONS)
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        try:
            super().connection_lost(exc)
        finally:
            self.edge.release(self.transport)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still in the same head (it did not complete within these bytes) and past any head
        # the limits allow: answer now rather than buffer an endless line until the deadline.
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._answer_and_close(HEADERS_TOO_LARGE)

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error with 400; a broken limit has its own answer.
        if self._answer is None:
            super().send_400_response(msg)
        else:
            self._answer_and_close(self._answer)

    # -- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._target_bytes = self._header_count = self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._target_bytes += len(url)
        if self._target_bytes > MAX_TARGET_BYTES:
            self._refuse(TARGET_TOO_LONG)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + HEADER_LINE_OVERHEAD
        if self._header_count > MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(HEADERS_TOO_LARGE)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        # A complete head (a request, or an upgrade handed to the WebSocket protocol next).
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer: the connection is idle, waiting for the next
        # request, which must be complete within the deadline (the timer alone ends at a byte).
        if self.timeout_keep_alive_task is not None:
            self._arm()

    # -- helpers --------------------------------------------------------------------------

    def _refuse(self, answer: bytes) -> NoReturn:
        self._answer = answer
        raise _HeadRefused  # httptools stops and raises; uvicorn calls send_400_response

    def _answer_and_close(self, answer: bytes) -> None:
        self._disarm()
        self.transport.write(with_request_id(answer))
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.edge.request_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        _drop(self.transport)


class EdgeWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol that answers a refused handshake and releases the address.

    The HTTP protocol hands over a complete upgrade head; the app must accept or refuse it
    within the request deadline counted from the TCP accept, and after accepting ``/v1/ws``
    gives the client ``ws_auth_timeout_s`` to sign in: together they bound how long a socket
    is held without a signed-in user.
    """

    edge: ClassVar[Edge]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._handshake_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Counted from the TCP accept, not from the upgrade: the upgrade head's own time
        # comes out of the same budget.
        accepted_at = self.edge.accepted_at(transport)
        start = self.loop.time() if accepted_at is None else accepted_at
        self._handshake_deadline = self.loop.call_at(
            start + self.edge.request_timeout_s, self._handshake_expired
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake_deadline is not None:
            self._handshake_deadline.cancel()
            self._handshake_deadline = None
        try:
            super().connection_lost(exc)
        finally:
            self.edge.release(self.transport)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        failure = self.conn.handshake_exc
        if failure is not None and not self.handshake_initiated and not self.transport.is_closing():
            # websockets refused the request before the app saw it and queued an answer that
            # uvicorn never writes; answer in the contract's shape and close.
            answer = HEADERS_TOO_LARGE if isinstance(failure, SecurityError) else BAD_UPGRADE
            self.close_sent = True
            self.transport.write(with_request_id(answer))
            self.transport.close()

    def _handshake_expired(self) -> None:
        self._handshake_deadline = None
        if not self.handshake_complete:
            _drop(self.transport)


class EdgeProtocols(NamedTuple):
    """The protocol classes of one server and the :class:`Edge` they share."""

    http: type[EdgeHttpProtocol]
    websocket: type[EdgeWebSocketProtocol]
    edge: Edge


def edge_protocols(
    settings: Settings, websocket_base: type[WebSocketsSansIOProtocol] = WebSocketsSansIOProtocol
) -> EdgeProtocols:
    """New protocol classes for one server, bound to a new :class:`Edge`.

    ``websocket_base`` adds its own behaviour beneath the edge's (corral's bounded send buffer).
    Classes are made per server so that two servers in one process never share counts.
    """
    edge = Edge(
        request_timeout_s=settings.request_timeout_s,
        max_connections_per_ip=settings.max_connections_per_ip,
    )
    http = type("EdgeHttpProtocol", (EdgeHttpProtocol,), {"edge": edge})
    websocket = type(
        "EdgeWebSocketProtocol", (EdgeWebSocketProtocol, websocket_base), {"edge": edge}
    )
    return EdgeProtocols(
        cast(type[EdgeHttpProtocol], http), cast(type[EdgeWebSocketProtocol], websocket), edge
    )
