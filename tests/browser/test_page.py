"""The web page (contract §7) in headless Chromium against a real server.

A person signs in, runs ``research`` and watches its tool calls and answer arrive; two people
in two browser contexts never see each other's runs; a socket dropped mid-run is reconnected
and resumed, and the run is shown complete, every event exactly once.

How the page shows events: see tests/support_page.py.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from support_page import RUN_TIMEOUT_MS, run_ids, seqs_in, sign_in, start_run, stored_run, types_in

pytestmark = [
    pytest.mark.browser,
    # The page is what is under test here; the database behind it is covered elsewhere.
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOT = REPO / "docs" / "screenshot.png"
UPDATE_SCREENSHOT_ENV = "CORRAL_UPDATE_SCREENSHOT"
# How many seconds light takes to reach the Moon: arithmetic, a conversion and two documents.
RESEARCH_QUESTION = (
    "How far is the Moon from Earth? Convert 384400 km to miles and work out 384400 / 299792.458."
)


# -- helpers ----------------------------------------------------------------------------------


PROBE = (
    "() => ({sockets: window.__corral.sockets.length, sent: window.__corral.sent, "
    "received: window.__corral.received, states: window.__corral.connStates})"
)


async def socket_log(page: Any, card: Any) -> str:
    """What the page's sockets did and what the card shows, for a failure message."""
    probe = await page.evaluate(PROBE)
    received: dict[int, list[int]] = {}
    for index, _run_id, seq in probe["received"]:
        received.setdefault(index, []).append(seq)
    return (
        f"sockets opened: {probe['sockets']}; indicator: {probe['states']}; "
        f"sent: {probe['sent']}; seqs received per socket: {received}; "
        f"seqs shown: {sorted(await seqs_in(card))}"
    )


# -- tests ------------------------------------------------------------------------------------


async def test_research_run_shows_tool_calls_and_the_answer_live(
    server: Any, new_page: Any
) -> None:
    """Dev sign-in, choose research, ask a question: each tool call appears and succeeds, the
    streamed answer and the final output (with its value and sources) show, the run succeeds."""
    page = await new_page()
    await sign_in(page, server.url + "/", "alice")
    card = await start_run(page, "research", {"question": RESEARCH_QUESTION})

    await expect(card).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
    tools = card.locator("li[data-call-id]")
    await expect(tools).to_have_count(3)
    await expect(card.locator("li[data-call-id][data-tool-status=success]")).to_have_count(3)
    await expect(tools.locator(".tool-name")).to_have_text(
        ["calculator", "convert_units", "search_docs"]
    )
    await expect(tools.nth(0).locator(".tool-result")).to_contain_text("1.28222038194")
    output = card.locator(".output")
    await expect(output).to_be_visible()
    answer = output.locator(".output-answer")
    await expect(answer).to_contain_text("384400 / 299792.458 = 1.28222038194")
    await expect(answer).to_contain_text("384400 km = 238855 mi")
    await expect(output.locator("ol.sources")).to_contain_text("The Moon")
    await expect(card.locator(".run-error")).to_be_hidden()

    # The page holds every event of the run, once, with the answer streamed as deltas that
    # add up to the final answer.
    run = await stored_run(server, "alice", await card.get_attribute("data-run-id"))
    assert run["status"] == "succeeded"
    await expect(card.locator("[data-seq]")).to_have_count(run["last_seq"])
    assert sorted(await seqs_in(card)) == list(range(1, run["last_seq"] + 1))
    streamed = await card.locator("li.ev-answer .answer span.delta").all_text_contents()
    assert streamed
    assert "".join(streamed) == run["output"]["answer"]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "research-run.png"
    # The timeline keeps its newest event in view; show the picture from the first tool call.
    await card.locator("ol.timeline").evaluate("t => { t.scrollTop = 0; }")
    await page.mouse.move(0, 0)  # no hover highlight in the picture
    await page.screenshot(path=str(shot))
    if os.environ.get(UPDATE_SCREENSHOT_ENV) == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


async def test_two_users_never_see_each_others_runs(server: Any, new_page: Any) -> None:
    """alice and bob, each in their own browser context, start overlapping runs: each page
    shows exactly its user's runs — live and after a reload — and none of the other's text."""
    alice, bob = await new_page(), await new_page()
    await sign_in(alice, server.url + "/", "alice")
    await sign_in(bob, server.url + "/", "bob")
    secrets = {"alice": f"alice-only-{uuid.uuid4().hex}", "bob": f"bob-only-{uuid.uuid4().hex}"}
    pages = {"alice": alice, "bob": bob}

    cards: dict[str, list[Any]] = {"alice": [], "bob": []}
    for n in range(2):  # interleaved, so the two users' runs overlap
        for user, page in pages.items():
            fields = {"message": f"{secrets[user]} #{n}", "steps": "4", "delay_ms": "50"}
            cards[user].append(await start_run(page, "echo", fields))
    for user in pages:
        for card in cards[user]:
            await expect(card).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)

    for reload in (False, True):
        for user, page in pages.items():
            other = "bob" if user == "alice" else "alice"
            if reload:
                await page.reload()
                await expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
                await expect(page.locator("#runs article.run")).to_have_count(2)
            async with server.client(user) as http:
                own = {r["run_id"] for r in (await http.get("/v1/runs")).json()["runs"]}
            async with server.client(other) as http:
                theirs = {r["run_id"] for r in (await http.get("/v1/runs")).json()["runs"]}
            assert len(own) == 2
            assert len(theirs) == 2
            assert not own & theirs
            shown = set(await run_ids(page))
            assert shown == own, f"{user}'s page shows {shown}, expected {own}"
            text = await page.locator("body").inner_text()
            assert secrets[user] in text
            assert secrets[other] not in text, f"{other}'s input is on {user}'s page"
            assert other not in await page.locator("#user-box").inner_text()
            # Nor did any of the other's events reach this page's sockets.
            received = await page.evaluate("() => window.__corral.received")
            assert {run_id for _socket, run_id, _seq in received} <= own, received


async def test_dropped_socket_is_resumed_and_the_run_shown_complete(
    server: Any, new_page: Any
) -> None:
    """The page's WebSocket is closed mid-run; the page reconnects on its own, resumes from its
    last seq and ends with every event 1..last exactly once, no step repeated, succeeded."""
    page = await new_page()
    await sign_in(page, server.url + "/", "alice")
    steps = 30
    card = await start_run(
        page, "echo", {"message": "resume me", "steps": str(steps), "delay_ms": "100"}
    )
    run_id = await card.get_attribute("data-run-id")

    # A few steps in, the socket goes away.
    await card.locator('[data-seq="10"]').wait_for(state="attached")
    closed = await page.evaluate(
        """() => {
          const open = window.__corral.sockets.filter((s) => s.readyState === WebSocket.OPEN);
          open.forEach((s) => s.close(4001, 'test: connection dropped'));
          return open.length;
        }"""
    )
    assert closed == 1
    # Reconnecting waits a back-off of about half a second first; allow for a loaded machine.
    await expect(card).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
    await expect(page.locator("#conn-status")).to_have_attribute(
        "data-state", "live", timeout=15_000
    )
    run = await stored_run(server, "alice", run_id)
    last = run["last_seq"]
    assert run["status"] == "succeeded"
    assert last == 2 + 3 * steps
    try:
        await expect(card.locator("[data-seq]")).to_have_count(last, timeout=15_000)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await socket_log(page, card)}") from None

    seqs = await seqs_in(card)
    assert sorted(seqs) == list(range(1, last + 1)), await socket_log(page, card)
    assert await types_in(card) == [
        "agent_started",
        *["agent_thinking", "tool_executing", "tool_completed"] * steps,
        "agent_completed",
    ]
    thinking = await card.locator("li.ev[data-type=agent_thinking] .ev-text").all_text_contents()
    assert thinking == [f"Echo step {i} of {steps}: resume me" for i in range(1, steps + 1)]
    await expect(card.locator("li[data-call-id]")).to_have_count(steps)
    await expect(card.locator("li[data-call-id][data-tool-status=success]")).to_have_count(steps)
    await expect(card.locator("li.ev")).to_have_count(2 + 2 * steps)  # no "repeated" rows
    await expect(card.locator(".output")).to_contain_text("resume me")

    # It really was a drop and a resume: the indicator went through "reconnecting", a second
    # socket was opened and asked to resume the run, and the first had not received it all.
    probe = await page.evaluate(PROBE)
    log = await socket_log(page, card)
    assert "reconnecting" in probe["states"], log
    assert probe["states"][-1] == "live", log
    assert probe["sockets"] == 2, log
    assert any(s[:3] == [1, "resume", run_id] for s in probe["sent"]), log
    first_socket = {seq for index, rid, seq in probe["received"] if index == 0 and rid == run_id}
    assert first_socket, log
    assert max(first_socket) < last, f"the drop came after the run had ended: {log}"
