"""corral mounted inside a user's own FastAPI app, with its lifespan run by the parent."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI

from conftest import _TestServer
from corral.server.app import create_app
from corral.server.auth import issue_token
from corral.server.runner import uvicorn_config
from corral.settings import Settings


async def test_mounted_under_a_prefix_serves_runs(tmp_path: Path, sqlite_url: str) -> None:
    """The parent runs corral's lifespan; /corral/v1/runs works beside the parent's routes."""
    secret = secrets.token_hex(32)
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, jwt_secret=secret, port=0)
    corral_app = create_app(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with corral_app.router.lifespan_context(corral_app):
            yield

    parent = FastAPI(lifespan=lifespan)

    @parent.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    parent.mount("/corral", corral_app)
    server = _TestServer(uvicorn_config(settings, parent))
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.wait_for(server.ready_event.wait(), 30)
        port = server.servers[0].sockets[0].getsockname()[1]
        headers = {"Authorization": f"Bearer {issue_token(secret, 'carol')}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as c:
            assert (await c.get("/hello")).json() == {"hello": "world"}
            run = (
                await c.post("/corral/v1/runs", json={"agent": "echo", "input": {"message": "m"}})
            ).json()
            async with c.stream("GET", f"/corral/v1/runs/{run['run_id']}/stream") as stream:
                body = (await stream.aread()).decode()
            assert "event: agent_completed" in body
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
