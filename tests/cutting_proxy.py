"""A TCP proxy that cuts connections at random points: the network fault client tests run under.

Every connection it accepts is forwarded to the upstream server byte for byte until a budget of
bytes (both directions together), drawn per connection from a seeded generator, is used up; then
both sides are aborted at once — mid-header, mid-frame, mid-JSON, wherever the budget ends. The
same seed gives the same budgets in the same order (which connection gets which depends on
timing), so a failure names its seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

CHUNK = 16 * 1024


@dataclass(frozen=True)
class Budgets:
    """How many bytes a connection may carry: a ``short`` share of connections draw from
    ``short_range`` (cuts in handshakes and small requests), the others from ``long_range``
    (cuts mid-stream). Both ranges are inclusive."""

    short: float = 0.25
    short_range: tuple[int, int] = (1, 1500)
    long_range: tuple[int, int] = (1500, 40_000)

    def draw(self, rng: random.Random) -> int:
        low, high = self.short_range if rng.random() < self.short else self.long_range
        return rng.randint(low, high)


@dataclass(eq=False)
class _Link:
    budget: int
    used: int = 0
    kind: str = "other"
    cut: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class CuttingProxy:
    """``async with CuttingProxy(host, port, seed=...) as proxy``: listens on ``proxy.url``.

    ``cuts`` counts the connections it cut, by kind (``ws``, ``sse``, ``http``: from the first
    request line); ``connections`` counts all it accepted. Concurrency: one asyncio task per
    direction per connection; leaving the block closes the listener and aborts what is open.
    """

    def __init__(self, host: str, port: int, *, seed: int, budgets: Budgets | None = None) -> None:
        self.upstream = (host, port)
        self.seed = seed
        self._rng = random.Random(seed)
        self._budgets = budgets or Budgets()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._links: set[_Link] = set()
        self.cuts: Counter[str] = Counter()
        self.connections = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not listening"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            for writer in link.writers:
                writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(budget=self._budgets.draw(self._rng), writers=[writer])
        self._links.add(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            self._links.discard(link)
            return
        link.writers.append(up_writer)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, link, first=True)),
            asyncio.create_task(self._pump(up_reader, writer, link, first=False)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.difference_update(pumps)
            self._links.discard(link)
            for w in link.writers:
                if not w.transport.is_closing():  # a cut side may still be flushing its last bytes
                    w.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        first: bool,
    ) -> None:
        """Copy one direction until EOF, an error, or the link's budget is spent (then cut)."""
        try:
            while not link.cut:
                data = await reader.read(CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                if first and link.used == 0:
                    link.kind = _kind(data)
                room = link.budget - link.used
                if len(data) >= room:
                    link.used = link.budget
                    self._cut(link, writer, data[:room])
                    return
                link.used += len(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            for w in link.writers:
                if not w.transport.is_closing():
                    w.transport.abort()

    def _cut(self, link: _Link, writer: asyncio.StreamWriter, last: bytes) -> None:
        """Stop the link: ``last`` (the budget's final bytes) still reaches ``writer``'s peer,
        which then sees the connection end mid-message; the other side is aborted."""
        if link.cut:
            return
        link.cut = True
        self.cuts[link.kind] += 1
        writer.write(last)
        writer.transport.close()  # flushes what was written, then ends the connection
        for w in link.writers:
            if w is not writer:
                w.transport.abort()


def _kind(first_bytes: bytes) -> str:
    line = first_bytes.split(b"\r\n", 1)[0]
    if line.startswith(b"GET /v1/ws"):
        return "ws"
    # Streams: GET /v1/runs/{id}/stream, POST /v1/runs/stream, POST /v1/ag-ui/{agent}.
    if line.startswith((b"GET ", b"POST ")) and (b"/stream" in line or b"/v1/ag-ui/" in line):
        return "sse"
    return "http"
