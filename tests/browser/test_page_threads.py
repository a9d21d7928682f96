"""Threads on the web page (contract §7, §10) in headless Chromium against a real server.

The side bar lists the user's threads, most recently updated first, paged by cursor; a thread
opens to its runs, and new runs continue it; it can be renamed, and deleted (after a
confirmation) with its runs, which leave the page. Run history pages with "Load older runs".
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import expect

from support_page import RUN_TIMEOUT_MS, run_ids, sign_in, start_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


async def listed_threads(page: Any) -> list[str]:
    """The thread ids of the side bar, top to bottom."""
    ids: list[str] = await page.locator("#thread-list li.thread").evaluate_all(
        "items => items.map(i => i.dataset.threadId)"
    )
    return ids


async def api_threads(http: Any) -> list[dict[str, Any]]:
    """Every thread of the user as the server lists them (most recently updated first)."""
    threads: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/v1/threads", params=params)).json()
        threads += page["threads"]
        cursor = page["next_cursor"]
        if not cursor:
            return threads


async def test_threads_list_open_rename_and_delete(server: Any, new_page: Any) -> None:
    """Two runs make two threads, listed newest first and named after their questions; opening
    one shows its runs only and a new run continues it (moving it to the top); renaming it
    shows the new title everywhere; deleting it (confirmed; "Keep it" first keeps it) removes
    it and its runs from the page and the server."""
    page = await new_page()
    await sign_in(page, server.url + "/", "erin")
    first = await start_run(page, "research", {"question": "What is 12 * 7?"})
    second = await start_run(page, "echo", {"message": "second thread"})
    for card in (first, second):
        await expect(card).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)

    titles = page.locator("#thread-list .thread-title")
    await expect(titles).to_have_text(["second thread", "What is 12 * 7?"])
    async with server.client("erin") as http:
        stored = await api_threads(http)
        runs = {r["run_id"]: r for r in (await http.get("/v1/runs")).json()["runs"]}
    assert [t["title"] for t in stored] == ["second thread", "What is 12 * 7?"]
    assert await listed_threads(page) == [t["thread_id"] for t in stored]
    second_thread, arithmetic = (t["thread_id"] for t in stored)
    first_id = await first.get_attribute("data-run-id")
    second_id = await second.get_attribute("data-run-id")
    assert runs[first_id]["thread_id"] == arithmetic
    assert runs[second_id]["thread_id"] == second_thread

    # Open the arithmetic thread: its run only; a new run continues it.
    await page.locator(f'#thread-list li[data-thread-id="{arithmetic}"] button').click()
    await expect(page.locator("#runs-title")).to_have_text("What is 12 * 7?")
    await expect(
        page.locator(f'#thread-list li[data-thread-id="{arithmetic}"] button')
    ).to_have_attribute("aria-current", "true")
    await expect(page.locator("#all-runs")).to_have_attribute("aria-current", "false")
    await expect(page.locator("#runs article.run")).to_have_count(1)
    assert await run_ids(page) == [first_id]
    follow_up = await start_run(page, "echo", {"message": "follow-up"})
    await expect(follow_up).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
    follow_up_id = await follow_up.get_attribute("data-run-id")
    async with server.client("erin") as http:
        run = (await http.get(f"/v1/runs/{follow_up_id}")).json()
    assert run["thread_id"] == arithmetic
    assert await run_ids(page) == [follow_up_id, first_id]
    await expect(titles).to_have_text(["What is 12 * 7?", "second thread"])

    # Rename it.
    await page.click("#thread-rename")
    await expect(page.locator("#rename-input")).to_be_focused()
    await expect(page.locator("#rename-input")).to_have_value("What is 12 * 7?")
    await page.fill("#rename-input", "Arithmetic")
    await page.click("#rename-save")
    await expect(page.locator("#runs-title")).to_have_text("Arithmetic")
    await expect(titles).to_have_text(["Arithmetic", "second thread"])
    await expect(page.locator("#rename-form")).to_be_hidden()
    async with server.client("erin") as http:
        assert (await http.get(f"/v1/threads/{arithmetic}")).json()["title"] == "Arithmetic"

    # Delete it: "Keep it" keeps it; confirmed, it goes with its runs.
    dialog = page.locator("#delete-dialog")
    await page.click("#thread-delete")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("“Arithmetic” will be deleted with all its runs")
    await dialog.get_by_role("button", name="Keep it").click()
    await expect(dialog).to_be_hidden()
    async with server.client("erin") as http:
        assert (await http.get(f"/v1/threads/{arithmetic}")).status_code == 200
    await page.click("#thread-delete")
    await dialog.get_by_role("button", name="Delete thread").click()
    await expect(dialog).to_be_hidden()
    await expect(titles).to_have_text(["second thread"])
    await expect(page.locator("#runs-title")).to_have_text("All runs")
    await expect(page.locator("#runs article.run")).to_have_count(1)
    assert await run_ids(page) == [second_id]
    text = await page.locator("#runs").inner_text()
    assert "follow-up" not in text
    assert "12 * 7" not in text
    async with server.client("erin") as http:
        assert (await http.get(f"/v1/threads/{arithmetic}")).status_code == 404
        for run_id in (first_id, follow_up_id):
            assert (await http.get(f"/v1/runs/{run_id}")).status_code == 404

    # A reload agrees: the deleted thread and its runs are gone.
    await page.reload()
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    await expect(titles).to_have_text(["second thread"])
    await expect(page.locator("#runs article.run")).to_have_count(1)


async def test_a_new_empty_thread_opens_and_takes_the_next_run(server: Any, new_page: Any) -> None:
    """ "New thread" makes an empty thread, lists it on top and opens it; the next run goes
    into it."""
    page = await new_page()
    await sign_in(page, server.url + "/", "fay")
    await page.click("#new-thread")
    await expect(page.locator("#thread-list li.thread")).to_have_count(1)
    [thread_id] = await listed_threads(page)
    await expect(page.locator("#runs-empty")).to_have_text("No runs in this thread yet.")
    await expect(page.locator("#thread-chip")).to_contain_text("New runs continue")
    card = await start_run(page, "echo", {"message": "into the new thread"})
    await expect(card).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
    async with server.client("fay") as http:
        run = (await http.get(f"/v1/runs/{await card.get_attribute('data-run-id')}")).json()
    assert run["thread_id"] == thread_id
    await expect(page.locator("#thread-list li.thread")).to_have_count(1)


async def test_threads_and_runs_page_by_cursor(server: Any, new_page: Any) -> None:
    """23 runs (so 23 threads) made over the API: the page lists 20 of each, newest first, and
    "Load more threads" / "Load older runs" bring the rest, none twice, in the server's order."""
    async with server.client("gus") as http:
        for n in range(23):
            resp = await http.post(
                "/v1/runs", json={"agent": "echo", "input": {"message": f"m{n}"}}
            )
            assert resp.status_code == 202, resp.text
        # All finished before the page opens: no live event may reorder the list meanwhile.
        deadline = asyncio.get_running_loop().time() + RUN_TIMEOUT_MS / 1000
        while any(
            r["status"] != "succeeded"
            for r in (await http.get("/v1/runs?limit=200")).json()["runs"]
        ):
            assert asyncio.get_running_loop().time() < deadline, "the runs did not finish"
            await asyncio.sleep(0.05)
        threads = [t["thread_id"] for t in await api_threads(http)]
        runs = [r["run_id"] for r in (await http.get("/v1/runs?limit=200")).json()["runs"]]
    assert len(threads) == len(runs) == 23

    page = await new_page()
    await sign_in(page, server.url + "/", "gus")
    await expect(page.locator("#thread-list li.thread")).to_have_count(20)
    await expect(page.locator("#runs article.run")).to_have_count(20)
    assert await listed_threads(page) == threads[:20]
    assert await run_ids(page) == runs[:20]

    await page.click("#threads-more")
    await expect(page.locator("#thread-list li.thread")).to_have_count(23)
    await expect(page.locator("#threads-more")).to_be_hidden()
    await page.click("#load-more")
    await expect(page.locator("#runs article.run")).to_have_count(23)
    await expect(page.locator("#load-more")).to_be_hidden()
    assert await listed_threads(page) == threads
    assert await run_ids(page) == runs
