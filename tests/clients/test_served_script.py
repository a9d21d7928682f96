"""``GET /corral-client.js``: the server serves the repository's JavaScript client, byte for
byte, at its root — also under a mount prefix — with a JavaScript content type."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from conftest import REPO, LiveServer, _TestServer
from corral.server.app import create_app
from corral.server.assets import CLIENT_SCRIPT
from corral.server.runner import uvicorn_config
from corral.settings import Settings

SOURCE = REPO / "clients" / "js" / "corral-client.js"

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_packaged_copy_is_the_repository_source() -> None:
    """The copy the package ships (server/static) is clients/js/corral-client.js unchanged."""
    assert CLIENT_SCRIPT.read_bytes() == SOURCE.read_bytes(), (
        f"{CLIENT_SCRIPT.relative_to(REPO)} differs from {SOURCE.relative_to(REPO)}: after "
        f"editing the client, run `cp {SOURCE.relative_to(REPO)} {CLIENT_SCRIPT.relative_to(REPO)}`"
    )


@sqlite_only
async def test_served_at_the_root_as_javascript_without_signing_in(server: LiveServer) -> None:
    """200 with text/javascript and the source's bytes, no token needed; revalidated (ETag)."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/corral-client.js")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.content == SOURCE.read_bytes()
        etag = response.headers["etag"]
        again = await http.get("/corral-client.js", headers={"If-None-Match": etag})
        assert again.status_code == 304
        head = await http.head("/corral-client.js")
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == len(SOURCE.read_bytes())


async def test_served_under_a_mount_prefix(tmp_path: Path, sqlite_url: str) -> None:
    """Mounted at /agents, the client is at /agents/corral-client.js (beside the page)."""
    settings = Settings(
        data_dir=tmp_path, database_url=sqlite_url, jwt_secret=secrets.token_hex(32), port=0
    )
    corral_app = create_app(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with corral_app.router.lifespan_context(corral_app):
            yield

    parent = FastAPI(lifespan=lifespan)
    parent.mount("/agents", corral_app)
    server = _TestServer(uvicorn_config(settings, parent))
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.wait_for(server.ready_event.wait(), 30)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await http.get("/agents/corral-client.js")
            assert response.status_code == 200
            assert response.content == SOURCE.read_bytes()
            assert (await http.get("/corral-client.js")).status_code == 404
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
