"""Minimal load-generator clients: keep-alive HTTP/1.1 and a frame-counting WebSocket.

Why not httpx and the ``websockets`` client: on a 2-core machine the client shares the CPU
with the server it measures, and a full-featured client spends more CPU per frame than the
server does. These clients do only what the benchmarks need — one request at a time on a
kept-alive connection; WebSocket frames parsed from the bytes as they arrive (server frames
are unmasked), pings answered, text frames sent masked — so that most of the CPU goes to
the server under test. Both talk to loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson

OnMessage = Callable[[bytes, float], None]
T = TypeVar("T")


class HttpClient:
    """One kept-alive HTTP/1.1 connection; ``request`` sends one request and reads its answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        reused = self._writer is not None and not self._writer.is_closing()
        try:
            return await self._request(method, path, body, headers)
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            # The server closed an idle kept-alive connection before reading this request
            # (nothing of the answer arrived): send it again once on a new connection.
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            self.close()
            return await self._request(method, path, body, headers)

    async def _request(
        self, method: str, path: str, body: bytes, headers: dict[str, str] | None
    ) -> tuple[int, bytes]:
        if self._writer is None or self._writer.is_closing():
            await self._connect()
        assert self._reader is not None
        assert self._writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body or method == "POST":
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value)
            elif lname == b"connection" and value.strip().lower() == b"close":
                close = True
        data = await self._reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, data

    async def stream(
        self,
        method: str,
        path: str,
        on_event: Callable[[str, bytes], None],
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> int:
        """Send one request and read its Server-Sent Events (chunked) to the end: calls
        ``on_event(event, data)`` per message as it arrives. Returns the status."""
        if self._writer is None or self._writer.is_closing():
            await self._connect()
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(self._head(method, path, body, headers) + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        fields = {
            name.strip().lower(): value.strip().lower()
            for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        }
        if fields.get(b"transfer-encoding") != b"chunked":
            length = int(fields.get(b"content-length", b"0"))
            if length:
                await self._reader.readexactly(length)
            return status
        pending = b""
        while True:
            size = int((await self._reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            chunk = await self._reader.readexactly(size + 2)
            if size == 0:
                break
            # Servers end SSE lines with \n or \r\n; the buffer is joined first, so a \r\n
            # split across two chunks is still seen.
            pending = (pending + chunk[:-2]).replace(b"\r\n", b"\n")
            while b"\n\n" in pending:
                message, pending = pending.split(b"\n\n", 1)
                event, data = "message", b""
                for line in message.split(b"\n"):
                    if line.startswith(b"event:"):
                        event = line[6:].strip().decode()
                    elif line.startswith(b"data:"):
                        data = line[5:].strip()
                if data:
                    on_event(event, data)
        if fields.get(b"connection") == b"close":
            self.close()
        return status

    def _head(self, method: str, path: str, body: bytes, headers: dict[str, str] | None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body or method == "POST":
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def post_json(
        self, path: str, doc: object, token: str
    ) -> tuple[int, dict[str, object] | None]:
        status, data = await self.request(
            "POST", path, orjson.dumps(doc), {"Authorization": f"Bearer {token}"}
        )
        return status, (orjson.loads(data) if data else None)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WsClient(asyncio.Protocol):
    """A WebSocket client connection that parses frames itself.

    ``on_message(payload, arrival_time)`` is called for each text or binary message (when
    given); ``frames`` and ``bytes_in`` count them either way. Pings are answered at once,
    so a connection held open for minutes stays alive.
    """

    def __init__(self, on_message: OnMessage | None = None) -> None:
        self.on_message = on_message
        self.frames = 0
        self.bytes_in = 0
        self.close_code: int | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._handshaken = False
        self._request = b""

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        path: str = "/v1/ws",
        token: str | None = None,
        on_message: OnMessage | None = None,
        timeout_s: float = 30.0,
    ) -> WsClient:
        loop = asyncio.get_running_loop()
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()

        def factory() -> WsClient:
            proto = cls(on_message)
            proto._request = request
            return proto

        _, proto = await asyncio.wait_for(loop.create_connection(factory, host, port), timeout_s)
        await asyncio.wait_for(proto.opened, timeout_s)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- receiving ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self._buf
        buf += data
        if not self._handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[9:12])
            del buf[: end + 4]
            if status != b"101":
                if not self.opened.done():  # done: the caller gave up waiting
                    self.opened.set_exception(ConnectionError(f"upgrade refused: {status!r}"))
                assert self._transport is not None
                self._transport.close()
                return
            self._handshaken = True
            if not self.opened.done():
                self.opened.set_result(None)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                (length,) = struct.unpack_from("!Q", buf, pos + 2)
                head = 10
            if size - pos < head + length:
                break
            opcode = b0 & 0x0F
            start = pos + head
            pos = start + length
            if opcode in (1, 2, 0):
                self.frames += 1
                self.bytes_in += length
                if self.on_message is not None:
                    self.on_message(bytes(buf[start:pos]), now)
            elif opcode == 9:  # ping → pong with the same payload
                self._send(0xA, bytes(buf[start:pos]))
            elif opcode == 8:
                self.close_code = (buf[start] << 8 | buf[start + 1]) if length >= 2 else 1005
                self._send(0x8, bytes(buf[start : start + 2]))
                assert self._transport is not None
                self._transport.close()
        if pos:
            del buf[:pos]

    # -- sending ------------------------------------------------------------------------------

    def _send(self, opcode: int, payload: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        if n:
            repeated = (mask * (n // 4 + 1))[:n]
            masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
                n, "big"
            )
        else:
            masked = b""
        self._transport.write(header + mask + masked)

    def send_text(self, data: bytes) -> None:
        self._send(0x1, data)

    def send_json(self, doc: object) -> None:
        self._send(0x1, orjson.dumps(doc))

    async def close(self, timeout_s: float = 5.0) -> None:
        if self._transport is None:
            return
        if not self._transport.is_closing():
            self._send(0x8, struct.pack("!H", 1000))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout_s)
        except TimeoutError:
            self._transport.abort()


async def connect_many(
    count: int,
    connect: Callable[[int], Awaitable[T]],
    *,
    concurrency: int = 100,
) -> list[T]:
    """Open ``count`` connections with at most ``concurrency`` handshakes in flight."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> T:
        async with sem:
            return await connect(i)

    return list(await asyncio.gather(*(one(i) for i in range(count))))
