"""Fixtures shared by every tier: real servers on port 0, real databases, token helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.core.registry import AgentRegistry
from corral.server.app import Runtime, create_app
from corral.server.auth import issue_token
from corral.server.runner import CorralServer, uvicorn_config
from corral.settings import Settings
from support import ServerProcess

POSTGRES_ENV = "CORRAL_TEST_POSTGRES_URL"
REDIS_ENV = "CORRAL_TEST_REDIS_URL"
REPO = Path(__file__).resolve().parents[1]


def pytest_report_header(config: pytest.Config) -> list[str]:
    pg = os.environ.get(POSTGRES_ENV)
    return [
        f"corral: PostgreSQL tests {'on ' + pg if pg else 'skipped (set ' + POSTGRES_ENV + ')'}"
    ]


# -- databases --------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database (then dropped)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}=postgresql+asyncpg://user@host/db")
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(base)
    name = f"corral_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# -- servers ----------------------------------------------------------------------------------


class _TestServer(CorralServer):
    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.ready_event = asyncio.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready_event.set()

    def install_signal_handlers(self) -> None:  # the test process keeps its own handlers
        return


@dataclass
class LiveServer:
    """A real corral server on an ephemeral loopback port, in this test's event loop."""

    url: str
    settings: Settings
    app: Any
    server: _TestServer

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/ws"

    @property
    def runtime(self) -> Runtime:
        runtime = self.app.state.runtime
        assert runtime is not None
        return runtime

    @property
    def secret(self) -> str:
        return self.runtime.secret

    def token(self, user: str, ttl_s: int = 3600) -> str:
        return issue_token(self.secret, user, ttl_s=ttl_s)

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def client(self, user: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = self.headers(user) if user else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **kwargs)


StartServer = Callable[..., Awaitable[LiveServer]]


@pytest.fixture
async def start_server(tmp_path: Path, database_url: str) -> AsyncIterator[StartServer]:
    """Start corral servers on port 0 (SQLite, and PostgreSQL when configured); stop them after."""
    started: list[tuple[_TestServer, asyncio.Task[None]]] = []

    async def start(registry: AgentRegistry | None = None, **overrides: Any) -> LiveServer:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "data_dir": tmp_path / f"data{len(started)}",
            "database_url": database_url,
            "jwt_secret": secrets.token_hex(32),
            "shutdown_grace_s": 2.0,
        }
        values.update(overrides)
        settings = Settings(**values)
        app = create_app(settings, registry)
        server = _TestServer(uvicorn_config(settings, app))
        task = asyncio.get_running_loop().create_task(server.serve())
        started.append((server, task))
        ready = asyncio.ensure_future(server.ready_event.wait())
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if not server.started:
            ready.cancel()
            await task  # surfaces the start-up error
            raise RuntimeError("the server did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        return LiveServer(f"http://127.0.0.1:{port}", settings, app, server)

    yield start
    for server, _task in reversed(started):
        server.should_exit = True
    for _server, task in reversed(started):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


@pytest.fixture
async def server(start_server: StartServer) -> LiveServer:
    """One server with the built-in agents and default settings."""
    return await start_server()


@pytest.fixture
def server_processes() -> Iterator[list[ServerProcess]]:
    """Child-process servers a test starts; killed after the test if still running."""
    procs: list[ServerProcess] = []
    yield procs
    for p in procs:
        if p.proc.poll() is None:
            p.kill()
