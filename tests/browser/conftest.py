"""Headless Chromium (Debian's ``chromium``) driven by Playwright, in the test's event loop.

The ``server`` fixture runs uvicorn in the pytest-asyncio loop, so the browser is driven through
Playwright's async API in that same loop. Without ``/usr/bin/chromium`` the browser tests skip
with a message saying how to enable them — except under ``CORRAL_TEST_BROWSER=1`` (set by
``.ci/run``), where a missing browser is a failure: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
HOW_TO_ENABLE = "install Debian's chromium (apt-get install chromium) to run the browser tests"
REQUIRED_ENV = "CORRAL_TEST_BROWSER"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
VIEWPORT = {"width": 1280, "height": 900}

# Counts a page's WebSockets, records the seqs each receives and the commands each sends, and
# every value the connection indicator takes. app.js keeps its socket in a module-private
# variable, so a test that drops the connection reaches it through window.__corral.sockets.
TRACK_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  const probe = { sockets: [], received: [], sent: [], connStates: [] };
  class TrackedWebSocket extends Native {
    constructor(...args) {
      super(...args);
      const index = probe.sockets.length;
      probe.sockets.push(this);
      const send = this.send.bind(this);
      this.send = (data) => {
        try {
          const msg = JSON.parse(data);  // kept without the token an auth message carries
          probe.sent.push([index, msg.type, msg.run_id ?? null, msg.after ?? null]);
        } catch (_err) { /* not JSON */ }
        return send(data);
      };
      this.addEventListener('message', (event) => {
        try {
          const msg = JSON.parse(event.data);
          if (typeof msg.seq === 'number') probe.received.push([index, msg.run_id, msg.seq]);
        } catch (_err) { /* not JSON: not ours to judge here */ }
      });
    }
  }
  window.WebSocket = TrackedWebSocket;
  window.__corral = probe;
  const watch = () => {
    const node = document.getElementById('conn-status');
    if (!node) return;
    probe.connStates.push(node.dataset.state);
    new MutationObserver(() => {
      const last = probe.connStates[probe.connStates.length - 1];
      if (node.dataset.state !== last) probe.connStates.push(node.dataset.state);
    }).observe(node, { attributes: true, attributeFilter: ['data-state'] });
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', watch);
  else watch();
})();
"""


@pytest.fixture(autouse=True)
def require_chromium() -> None:
    """Skip (or, under CORRAL_TEST_BROWSER=1, fail) before any server starts, without Chromium."""
    if CHROMIUM.exists():
        return
    if os.environ.get(REQUIRED_ENV) == "1":
        pytest.fail(f"{REQUIRED_ENV}=1 but {CHROMIUM} is missing: {HOW_TO_ENABLE}")
    pytest.skip(HOW_TO_ENABLE)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for this test, closed after it."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


NewPage = Callable[[], Awaitable[Any]]


@pytest.fixture
async def new_page(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[NewPage]:
    """Open a page in a new browser context (its own storage: one person, one tab).

    Request it after ``server``, so that pages close before the server stops.

    Every page tracks its WebSockets (see ``TRACK_SOCKETS``). After the test: an uncaught
    script error on any page fails it, and if the test failed each page is saved as a
    screenshot into ``test-artifacts/`` for CI to keep.
    """
    pages: list[tuple[Any, list[str]]] = []
    contexts: list[Any] = []

    async def open_page() -> Any:
        context = await browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        await context.add_init_script(TRACK_SOCKETS)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(15_000)
        pages.append((page, errors))
        return page

    yield open_page

    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        for n, (page, _errors) in enumerate(pages):
            try:
                await page.screenshot(
                    path=str(ARTIFACTS / f"failed-{name}-{n}.png"), full_page=True
                )
            except Exception as exc:  # best effort: the failure itself is already reported
                print(f"could not save a screenshot of page {n}: {exc}")
    for context in contexts:
        await context.close()
    script_errors = [e for _page, errors in pages for e in errors]
    assert not script_errors, f"uncaught errors in the page: {script_errors}"
