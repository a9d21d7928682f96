"""The page, its assets, ``corral-client.js`` and the socket under a path prefix (contract §13):
corral mounted at ``/agents`` in a host FastAPI app that runs corral's lifespan from its own,
driven in headless Chromium — a run end to end."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from playwright.async_api import expect

from conftest import _TestServer
from corral.server.app import create_app
from corral.server.runner import uvicorn_config
from corral.settings import Settings
from support_page import sign_in

pytestmark = pytest.mark.browser

PREFIX = "/agents"

# Runs in the page: the served module, imported from the prefix, runs echo to its end.
CLIENT_SCENARIO = """
async ({ token }) => {
  const { CorralClient } = await import('./corral-client.js');
  const client = new CorralClient({ token });
  const delivered = [];
  const finished = new Promise((resolve) => client.on('*', (event) => {
    delivered.push(event.type);
    if (event.type === 'agent_completed') resolve();
  }));
  await client.ready();
  await client.startRun('echo', { message: 'mounted', steps: 2 });
  await finished;
  const sockets = window.__corral.sockets.map((s) => s.url);
  const result = { baseUrl: client.baseUrl, delivered, sockets };
  client.close();
  return result;
}
"""


@contextlib.asynccontextmanager
async def host_app(tmp_path: Path) -> AsyncIterator[tuple[str, Settings]]:
    """A host FastAPI app with routes of its own and corral under /agents; yields its URL."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}",
        jwt_secret=secrets.token_hex(32),
        shutdown_grace_s=1.0,
    )
    corral_app = create_app(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with corral_app.router.lifespan_context(corral_app):
            yield

    host = FastAPI(lifespan=lifespan)

    @host.get("/")
    async def home() -> dict[str, str]:
        return {"app": "the host's own page"}

    host.mount(PREFIX, corral_app)
    server = _TestServer(uvicorn_config(settings, host))
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        await asyncio.wait_for(server.ready_event.wait(), 30)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", settings
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def test_the_page_under_a_prefix_signs_in_and_runs_end_to_end(
    tmp_path: Path, new_page: Any
) -> None:
    """/agents redirects to /agents/; the page, its script and style, the client module, the API
    calls and the socket all go under /agents/ (nothing to the host's root, nothing elsewhere);
    a research run asks its question, is answered, shows its tool calls and succeeds; the
    host's own route still answers."""
    async with host_app(tmp_path) as (base, _settings):
        page = await new_page()
        requested: list[str] = []
        failed: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        # Every failed request, but the page's cookie-session probe: on load it asks
        # GET v1/me with cookies only, and a 401 there just means "sign in with a token".
        page.on(
            "response",
            lambda r: (
                failed.append(r.url)
                if r.status >= 400 and not (r.status == 401 and r.url.endswith(PREFIX + "/v1/me"))
                else None
            ),
        )
        await sign_in(page, base + PREFIX, "mona")
        assert page.url == base + PREFIX + "/"
        await page.select_option("#agent-select", "research")
        await page.fill("#field-question", "What is 12 * 7? Check with me.")
        await page.click("#start-run")
        card = page.locator("#runs article.run").first
        # research asks before searching: the answer goes to /agents/v1/runs/{id}/input.
        form = card.locator("form.question-form")
        await expect(form.locator("xpath=..")).to_contain_text(
            "Shall I search my reference documents as well?", timeout=20_000
        )
        await form.get_by_role("button", name="Send answer").click()
        await expect(card).to_have_attribute("data-status", "succeeded", timeout=20_000)
        await expect(form).to_have_count(0)
        await expect(card.locator("li[data-call-id][data-tool-status=success]")).not_to_have_count(
            0
        )
        sockets = await page.evaluate("() => window.__corral.sockets.map((s) => s.url)")
        assert sockets
        assert all(url == base.replace("http", "ws", 1) + PREFIX + "/v1/ws" for url in sockets)
        assert not failed, failed
        # The page loads nothing from the network: every request goes to this server.
        elsewhere = [u for u in requested if not u.startswith((base + "/", "data:"))]
        assert not elsewhere, elsewhere
        ours = [u for u in requested if u.startswith(base)]
        assert ours
        outside = [u for u in ours if not u.startswith(base + PREFIX + "/") and u != base + PREFIX]
        assert not outside, outside
        assert base + PREFIX + "/static/app.js" in requested
        assert base + PREFIX + "/static/style.css" in requested
        assert any(u.startswith(base + PREFIX + "/v1/runs") for u in requested)
        assert base + PREFIX + "/corral-client.js" in requested
        run_id = await card.get_attribute("data-run-id")
        assert base + PREFIX + f"/v1/runs/{run_id}/input" in requested
        host_page = await page.request.get(base + "/")
        assert await host_page.json() == {"app": "the host's own page"}


async def test_corral_client_js_under_a_prefix_finds_the_api_from_its_own_url(
    tmp_path: Path, new_page: Any
) -> None:
    """The served module, imported from /agents/corral-client.js with no baseUrl, talks to
    /agents/ — HTTP and socket — and delivers a run whole."""
    from corral.server.auth import issue_token

    async with host_app(tmp_path) as (base, settings):
        page = await new_page()
        await page.goto(base + PREFIX + "/")
        assert settings.jwt_secret is not None
        token = issue_token(settings.jwt_secret, "nell")
        result = await page.evaluate(CLIENT_SCENARIO, {"token": token})
    assert result["baseUrl"] == base + PREFIX
    assert result["delivered"][0] == "agent_started"
    assert result["delivered"][-1] == "agent_completed"
    assert result["sockets"] == [base.replace("http", "ws", 1) + PREFIX + "/v1/ws"]
