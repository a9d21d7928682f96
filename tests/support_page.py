"""Helpers of the browser tests of the web page (tests/browser): sign in, start runs, read cards.

How the page shows events (static/runs.js): each event is one element carrying ``data-seq`` — a
row ``li.ev`` for most types; for a tool call the row ``li[data-call-id]`` carries the seq of its
``tool_executing`` and its nested ``.tool-result`` the seq of its ``tool_completed``; answer
deltas are ``span.delta`` inside the one ``li.ev-answer`` row. So the ``[data-seq]`` elements of
a run card are its events, one each. An open question is a ``form.question-form`` in its
``input_requested`` row.
"""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

RUN_TIMEOUT_MS = 20_000  # a run to its end, on a loaded CI machine


async def sign_in(page: Any, url: str, user: str) -> None:
    """Open the page at ``url`` and use the loopback dev sign-in as ``user``; returns once live."""
    await page.goto(url)
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    await page.fill("#dev-user", user)
    await page.click("#dev-signin")
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    await expect(page.locator("#user-id")).to_have_text(user)
    await expect(page.locator("#agent-select")).to_be_enabled()


async def start_run(page: Any, agent: str, fields: dict[str, str]) -> Any:
    """Fill the generated form for ``agent`` and start a run; the new run's card."""
    before = set(await run_ids(page))
    await page.select_option("#agent-select", agent)
    for name, value in fields.items():
        await page.fill(f"#field-{name}", value)
    await expect(page.locator("#start-run")).to_be_enabled()
    await page.click("#start-run")
    cards = page.locator("#runs article.run")
    await expect(cards).to_have_count(len(before) + 1)
    await expect(page.locator("#form-errors")).to_be_hidden()
    [new] = set(await run_ids(page)) - before
    return page.locator(f'#runs article.run[data-run-id="{new}"]')


async def run_ids(page: Any) -> list[str]:
    """The run ids of the cards on the page, top to bottom."""
    ids: list[str] = await page.locator("#runs article.run").evaluate_all(
        "cards => cards.map(c => c.dataset.runId)"
    )
    return ids


async def seqs_in(card: Any) -> list[int]:
    """The seq of every event element in ``card``, in document order."""
    seqs: list[str] = await card.locator("[data-seq]").evaluate_all(
        "nodes => nodes.map(n => n.dataset.seq)"
    )
    return [int(s) for s in seqs]


async def types_in(card: Any) -> list[str]:
    """The event type of each ``[data-seq]`` element of ``card``, ordered by seq."""
    pairs: list[list[Any]] = await card.locator("[data-seq]").evaluate_all(
        "nodes => nodes.map(n => [Number(n.dataset.seq), n.dataset.type])"
    )
    return [t for _seq, t in sorted(pairs)]


async def stored_run(server: Any, user: str, run_id: str) -> dict[str, Any]:
    """The run object as the server has it."""
    async with server.client(user) as http:
        resp = await http.get(f"/v1/runs/{run_id}")
        assert resp.status_code == 200, resp.text
        run: dict[str, Any] = resp.json()
        return run


async def shows_every_event_once(server: Any, user: str, card: Any) -> dict[str, Any]:
    """Assert that ``card`` holds each stored event of its run exactly once; the run object."""
    run = await stored_run(server, user, await card.get_attribute("data-run-id"))
    await expect(card.locator("[data-seq]")).to_have_count(run["last_seq"])
    assert sorted(await seqs_in(card)) == list(range(1, run["last_seq"] + 1))
    return run
