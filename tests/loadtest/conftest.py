"""A deliberately broken corral server, for proving that ``corral loadtest`` catches it.

The server is the real app from ``create_app`` behind a small ASGI middleware that sees every
outgoing WebSocket text frame, per connection, and commits exactly one fault:

- ``misroute``: copies one ``agent_thinking`` frame of one user to a connection of another;
- ``drop``: drops one ``tool_executing`` frame;
- ``reorder``: holds one ``agent_thinking`` frame back and sends it after the frame behind it;
- ``disconnect``: closes one connection with 1013 instead of sending an event (a fault the
  contract allows: the client must resume, and the loadtest must then still pass).

It lives here, in the tests, and never in the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import LiveServer, _TestServer
from corral.server.app import create_app
from corral.server.runner import uvicorn_config
from corral.settings import Settings

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
FAULTS = ("misroute", "drop", "reorder", "disconnect")


@dataclass(eq=False)
class _Socket:
    """One WebSocket as the middleware sees it: its ASGI send, its user, what it holds."""

    send: Send
    user: str | None = None
    ponged: bool = False  # the loadtest pings only when a user is done: no more frames after
    inbox: list[Message] = field(default_factory=list)  # frames of others, sent before its own
    held: tuple[str, Message] | None = None  # (run_id, frame) held back by ``reorder``


class FaultInjector:
    """ASGI middleware committing one ``fault`` on outgoing WebSocket frames; see the module.

    ``injected`` describes the fault once committed; tests assert on it, so a fault that never
    happened cannot pass for a loadtest that missed it.
    """

    def __init__(self, app: Any, fault: str) -> None:
        assert fault in FAULTS
        self.app = app  # ``CorralServer`` finds the inner app (and its runtime) through this
        self.fault = fault
        self.injected: str | None = None
        self._sockets: list[_Socket] = []
        self._holding = False  # ``reorder`` holds one frame at a time

    async def __call__(self, scope: Message, receive: Any, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        sock = _Socket(send)
        self._sockets.append(sock)

        async def faulty_send(message: Message) -> None:
            await self._send(sock, message)

        try:
            await self.app(scope, receive, faulty_send)
        finally:
            self._sockets.remove(sock)

    async def _send(self, sock: _Socket, message: Message) -> None:
        text = message.get("text") if message["type"] == "websocket.send" else None
        if text is None:
            await sock.send(message)
            return
        doc = orjson.loads(text)
        if doc.get("type") == "ready":
            sock.user = doc["user_id"]
        elif doc.get("type") == "pong":
            sock.ponged = True
        while sock.inbox:
            await sock.send(sock.inbox.pop(0))
        if sock.held is not None:
            run_id, held = sock.held
            sock.held = None
            if doc.get("run_id") == run_id:
                await sock.send(message)
                await sock.send(held)
                self.injected = f"sent seq {doc['seq'] - 1} after seq {doc['seq']} of {run_id}"
                return
            await sock.send(held)  # not followed by its own run: try again on a later frame
            self._holding = False
        if self.injected is None and "seq" in doc and await self._fault(sock, doc, message):
            return
        await sock.send(message)

    async def _fault(self, sock: _Socket, doc: Message, message: Message) -> bool:
        """Commit the fault on this event frame if it fits; True when the frame was consumed."""
        kind = doc["type"]
        if self.fault == "misroute" and kind == "agent_thinking":
            victims = [s for s in self._sockets if s.user not in (None, sock.user) and not s.ponged]
            if victims:
                victims[0].inbox.append(message)
                self.injected = f"copied {kind} of {sock.user} to a socket of {victims[0].user}"
        elif self.fault == "drop" and kind == "tool_executing":
            self.injected = f"dropped seq {doc['seq']} of {doc['run_id']} for {sock.user}"
            return True
        elif self.fault == "reorder" and kind == "agent_thinking" and not self._holding:
            self._holding = True
            sock.held = (doc["run_id"], message)
            return True
        elif self.fault == "disconnect" and kind == "tool_executing":
            self.injected = f"closed a socket of {sock.user} with 1013 at seq {doc['seq']}"
            await sock.send({"type": "websocket.close", "code": 1013, "reason": "test"})
            return True
        return False


StartBroken = Callable[[str], Awaitable[tuple[LiveServer, FaultInjector]]]


@pytest.fixture
async def start_broken_server(tmp_path: Path, sqlite_url: str) -> AsyncIterator[StartBroken]:
    """Start a real corral server (SQLite, port 0) behind a :class:`FaultInjector`."""
    started: list[tuple[_TestServer, asyncio.Task[None]]] = []

    async def start(fault: str) -> tuple[LiveServer, FaultInjector]:
        settings = Settings(
            host="127.0.0.1",
            port=0,
            data_dir=tmp_path / f"broken{len(started)}",
            database_url=sqlite_url,
            jwt_secret=secrets.token_hex(32),
            shutdown_grace_s=2.0,
        )
        app = create_app(settings)
        injector = FaultInjector(app, fault)
        server = _TestServer(uvicorn_config(settings, injector))
        task = asyncio.get_running_loop().create_task(server.serve())
        started.append((server, task))
        ready = asyncio.ensure_future(server.ready_event.wait())
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if not server.started:
            ready.cancel()
            await task
            raise RuntimeError("the broken server did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        return LiveServer(f"http://127.0.0.1:{port}", settings, app, server), injector

    yield start
    for server, _task in started:
        server.should_exit = True
    for _server, task in started:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
