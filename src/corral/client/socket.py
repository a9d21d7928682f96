"""Opening one signed-in WebSocket to ``/v1/ws``: connect, send ``auth``, wait for ``ready``.

Shared by :class:`corral.client.Session` and ``corral loadtest`` (which reads the frames raw,
to check them).
"""

from __future__ import annotations

import asyncio

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from corral.client.errors import CorralAPIError

CLOSE_POLICY = 1008  # the token was refused or has expired
CLOSE_TRY_AGAIN_LATER = 1013  # this client read too slowly, or the server lost events


def ws_url(base_url: str) -> str:
    """``/v1/ws`` of the server at ``base_url`` (http → ws, https → wss)."""
    base = base_url.rstrip("/")
    scheme = "wss" if base.startswith("https") else "ws"
    return scheme + base[base.index(":") :] + "/v1/ws"


async def open_socket(
    url: str,
    token: str | None,
    *,
    open_timeout: float = 15.0,
    max_size: int | None = 16 * 1024 * 1024,
    max_queue: int | None = 64,
    ping_interval: float | None = 20.0,
    close_timeout: float = 5.0,
) -> tuple[ClientConnection, bytes]:
    """A socket signed in with ``token`` (sent in the first message, never in the URL), and
    the raw ``ready`` message.

    Raises :class:`CorralAPIError` when the server refuses (``unauthorized`` for a refused
    token, ``rate_limited`` past the per-user connection limit...), ``TimeoutError`` when it
    does not answer within ``open_timeout``, and ``OSError`` / websockets' errors when it
    cannot be reached. Cancellation-safe: a socket half open is aborted.
    """
    async with asyncio.timeout(open_timeout):
        ws = await connect(
            url,
            open_timeout=None,  # the surrounding timeout covers connect + auth + ready
            ping_interval=ping_interval,
            compression=None,
            max_size=max_size,
            max_queue=max_queue,
            close_timeout=close_timeout,
            proxy=None,
        )
        try:
            await ws.send(orjson.dumps({"type": "auth", "token": token or ""}), text=True)
            raw = await ws.recv(decode=False)
        except ConnectionClosed as exc:
            ws.transport.abort()
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            if code == CLOSE_POLICY:
                raise CorralAPIError(401, "unauthorized", "the server refused the token") from exc
            raise
        except BaseException:
            ws.transport.abort()
            raise
    assert isinstance(raw, bytes)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and doc.get("type") == "ready":
        return ws, raw
    ws.transport.abort()
    if isinstance(doc, dict) and doc.get("type") == "error":
        raise CorralAPIError.from_message(doc)
    raise CorralAPIError(None, "http_error", f"expected ready from the server, got {raw[:200]!r}")
