"""The page with a sign-in hook (contract §2, §7): the browser's own cookie signs it in without
a token, and the dev sign-in is hidden where the server gives out no development tokens."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from support_identity import HOOK_SOURCE, hook_credential, write_module

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def hook_spec(tmp_path: Path) -> Iterator[str]:
    """``MODULE:authenticate`` of the test hook, written to disk (cookie `team_session`)."""
    name = write_module(tmp_path, HOOK_SOURCE, "page_hook")
    yield f"{name}:authenticate"
    sys.modules.pop(name, None)
    sys.path.remove(str(tmp_path))


async def test_a_cookie_session_signs_the_page_in_without_a_token(
    start_server: Any, hook_spec: str, new_page: Any
) -> None:
    """With the hook's cookie in the browser, the page goes live as its user at once; its
    socket signs in at the upgrade (no `auth` message is sent) and no token is stored."""
    server = await start_server(auth=hook_spec)
    page = await new_page()
    await page.context.add_cookies(
        [{"name": "team_session", "value": hook_credential("ann"), "url": server.url}]
    )
    await page.goto(server.url + "/")
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    await expect(page.locator("#user-id")).to_have_text("ann")
    await expect(page.locator("#agent-select")).to_be_enabled()
    sent = await page.evaluate("() => window.__corral.sent.map(s => s[1])")
    assert "auth" not in sent
    assert await page.evaluate("() => sessionStorage.getItem('corral.token')") is None


async def test_without_a_session_the_page_asks_to_sign_in_and_hides_dev_sign_in(
    start_server: Any, hook_spec: str, new_page: Any
) -> None:
    """No cookie: the sign-in panel stays; the hook server gives out no dev tokens, so the
    dev sign-in is hidden and its hint shown."""
    server = await start_server(auth=hook_spec)
    page = await new_page()
    await page.goto(server.url + "/")
    await expect(page.locator("#signin-panel")).to_be_visible()
    await expect(page.locator("#dev-section")).to_be_hidden()
    await expect(page.locator("#dev-hint")).to_be_visible()
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "offline")


async def test_a_loopback_hs256_server_keeps_the_dev_sign_in(
    start_server: Any, new_page: Any
) -> None:
    """The default mode on a loopback server gives out dev tokens: the form stays."""
    server = await start_server()
    page = await new_page()
    await page.goto(server.url + "/")
    await expect(page.locator("#dev-section")).to_be_visible()
    await expect(page.locator("#dev-hint")).to_be_hidden()


async def test_a_pasted_token_signs_in_and_a_refused_one_says_why(
    start_server: Any, new_page: Any
) -> None:
    """A token pasted as "Bearer …" signs the page in as its user, over HTTP and the socket; a
    token signed with another secret is refused with the server's reason and nothing is kept."""
    from corral.server.auth import issue_token

    server = await start_server()
    page = await new_page()
    await page.goto(server.url + "/")
    await page.fill("#token-input", "Bearer " + issue_token("another secret " * 4, "mallory"))
    await page.click("#token-signin")
    await expect(page.locator("#signin-message")).to_contain_text("Signed out:")
    await expect(page.locator("#signin-panel")).to_be_visible()
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    assert await page.evaluate("() => sessionStorage.getItem('corral.token')") is None

    sockets = await page.evaluate("() => window.__corral.sockets.length")
    await page.fill("#token-input", "Bearer " + server.token("tess"))
    await page.click("#token-signin")
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    await expect(page.locator("#user-id")).to_have_text("tess")
    await expect(page.locator("#signin-message")).to_be_hidden()
    sent = await page.evaluate("() => window.__corral.sent")
    # The token went in the first message of the new client's socket.
    assert [kind for index, kind, *_ in sent if index >= sockets][:1] == ["auth"]
