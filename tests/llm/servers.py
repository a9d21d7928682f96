"""Small HTTP servers for the model tests, run in the test's own event loop on port 0.

:class:`RecordingProxy` sits in front of a real model server and keeps every request corral
makes; :class:`ScriptedModel` answers chat completions as a test scripts it (error statuses,
broken streams, streams that never end, tool calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- small ASGI servers in the test's loop ----------------------------------------------------


class _QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test process keeps its own handlers
        yield


@contextlib.asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port in this loop; yields ``http://127.0.0.1:PORT``."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None)
    server = _QuietServer(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    ready = asyncio.ensure_future(server.ready.wait())
    await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    if not server.started:
        ready.cancel()
        await task
        raise RuntimeError("the test HTTP server did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclass
class Request:
    """One request a test server received, and what became of its response."""

    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    def text(self) -> str:
        return json.dumps(self.body, ensure_ascii=False)


async def _read_request(scope: Scope, receive: Receive) -> Request:
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    body = json.loads(raw) if raw else {}
    return Request(body, headers, asyncio.get_running_loop().time())


def _watch_disconnect(receive: Receive, request: Request) -> asyncio.Task[None]:
    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not request.finished.is_set():
                    request.disconnected.set()
                return

    return asyncio.get_running_loop().create_task(watch())


async def _start_stream(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )


async def _send_body(send: Send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


class RecordingProxy:
    """Forwards chat completions to a real model server and keeps every request body.

    With ``hold`` set, the response pauses after its first piece of text until the test sets
    the event — a run that is certainly mid-stream. ``requests[i].disconnected`` is set when
    corral closed the response before its end.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[Request] = []
        self.hold: asyncio.Event | None = None
        self.first_text = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        request = await _read_request(scope, receive)
        self.requests.append(request)
        watcher = _watch_disconnect(receive, request)
        path = scope["path"].removeprefix("/v1")
        try:
            async with (
                httpx.AsyncClient(timeout=60, trust_env=False) as client,
                client.stream("POST", self.upstream + path, json=request.body) as upstream,
            ):
                content_type = upstream.headers.get("content-type", "application/json")
                await send(
                    {
                        "type": "http.response.start",
                        "status": upstream.status_code,
                        "headers": [(b"content-type", content_type.encode())],
                    }
                )
                text_seen = False
                async for line in upstream.aiter_lines():
                    await _send_body(send, (line + "\n").encode())
                    text_seen = text_seen or _has_text(line)
                    # Hold at the blank line that completes the first event carrying text.
                    if (
                        self.hold is not None
                        and text_seen
                        and not line
                        and not self.first_text.is_set()
                    ):
                        self.first_text.set()
                        held = asyncio.ensure_future(self.hold.wait())
                        gone = asyncio.ensure_future(request.disconnected.wait())
                        await asyncio.wait({held, gone}, return_when=asyncio.FIRST_COMPLETED)
                        held.cancel()
                        gone.cancel()
                        if request.disconnected.is_set():
                            return
                await _send_body(send, b"", more=False)
                request.finished.set()
        finally:
            watcher.cancel()


def _has_text(line: str) -> bool:
    if not line.startswith("data:") or "[DONE]" in line:
        return False
    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
        return bool(json.loads(line[5:])["choices"][0]["delta"].get("content"))
    return False


# -- a scripted chat-completions endpoint -----------------------------------------------------


def chunk(text: str | None = None, *, finish: str | None = None, **delta: Any) -> str:
    """One well-formed ``data:`` line of a chat-completions stream."""
    if text is not None:
        delta["content"] = text
    doc = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "stub",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return "data: " + json.dumps(doc)


DONE = "data: [DONE]"


@dataclass
class Reply:
    """A plain HTTP answer (an error status, say)."""

    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stream:
    """An event stream of these ``data:`` lines; with ``hang``, it then never ends."""

    lines: list[str]
    hang: bool = False


Script = Reply | Stream


def answer(*pieces: str) -> Stream:
    """A complete streamed answer made of ``pieces``."""
    return Stream(
        [chunk(role="assistant"), *(chunk(p) for p in pieces), chunk(finish="stop"), DONE]
    )


class ScriptedModel:
    """Answers each request with the next script (the last one repeats); records requests."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts: deque[Script] = deque(scripts)
        self.requests: list[Request] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        request = await _read_request(scope, receive)
        self.requests.append(request)
        script = self.scripts.popleft() if len(self.scripts) > 1 else self.scripts[0]
        watcher = _watch_disconnect(receive, request)
        try:
            if isinstance(script, Reply):
                headers = [(k.lower().encode(), v.encode()) for k, v in script.headers.items()]
                await send(
                    {"type": "http.response.start", "status": script.status, "headers": headers}
                )
                await _send_body(send, script.body.encode(), more=False)
            else:
                await _start_stream(send)
                for line in script.lines:
                    await _send_body(send, f"{line}\n\n".encode())
                if script.hang:
                    await request.disconnected.wait()
                    return
                await _send_body(send, b"", more=False)
            request.finished.set()
        finally:
            watcher.cancel()
