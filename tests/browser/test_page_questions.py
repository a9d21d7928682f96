"""Questions on the web page (contract §7, §9) in headless Chromium against a real server.

A run that asks shows its prompt with a form made from the schema; the answer is sent and the
run completes. A refused answer shows the server's details next to its field; an answer to a
question that was closed meanwhile says so; a reloaded page and a second tab still show an open
question, and answering it in one closes it in the other.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from playwright.async_api import expect

from hitl_agents import registry as hitl_registry
from support_page import RUN_TIMEOUT_MS, shows_every_event_once, sign_in, start_run, stored_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


async def wait_for_question(card: Any, prompt: str) -> Any:
    """The card's open question form (a locator of that one question), once the run waits
    with ``prompt``."""
    await expect(card).to_have_attribute("data-status", "waiting", timeout=RUN_TIMEOUT_MS)
    await expect(card.locator(".badge")).to_have_text("waiting for you")
    open_row = card.locator("li.ev[data-type=input_requested]:has(form.question-form)")
    await expect(open_row.locator(".question-prompt")).to_have_text(prompt)
    seq = await open_row.get_attribute("data-seq")
    form = card.locator(f'li.ev[data-seq="{seq}"] form.question-form')
    await expect(form).to_be_visible()
    return form


async def start_asker(page: Any, schema: Any, questions: int = 1) -> Any:
    """Start the test agent ``asker`` with ``schema`` (JSON, or null) from the page's form."""
    return await start_run(
        page,
        "asker",
        {
            "prompt": "Your answer?",
            "answer_schema": json.dumps(schema),
            "questions": str(questions),
        },
    )


async def test_research_asks_which_scale_and_the_chosen_one_completes_the_run(
    server: Any, new_page: Any
) -> None:
    """research asks which scale 100 degrees are in: the prompt shows with a select of the
    scales; choosing Fahrenheit and sending closes the form, and the run completes with that
    conversion, every event shown once."""
    page = await new_page()
    await sign_in(page, server.url + "/", "alice")
    card = await start_run(page, "research", {"question": "Convert 100 degrees to kelvin"})
    form = await wait_for_question(card, "By 100 degrees, do you mean Celsius or Fahrenheit?")
    scale = form.get_by_label("Scale")
    await expect(scale.locator("option")).to_have_text(["Choose…", "celsius", "fahrenheit"])

    await scale.select_option(label="fahrenheit")
    await form.get_by_role("button", name="Send answer").click()

    await expect(card).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
    await expect(card.locator("form.question-form")).to_have_count(0)
    await expect(card.locator(".question-answered")).to_have_text("Answered.")
    received = card.locator("li.ev[data-type=input_received]")
    await expect(received).to_contain_text('"scale": "fahrenheit"')
    run = await shows_every_event_once(server, "alice", card)
    assert run["output"]["answer"].startswith("100°F = 310.928 K.")
    await expect(card.locator(".output-answer")).to_have_text(run["output"]["answer"])
    async with server.client("alice") as http:
        events = (await http.get(f"/v1/runs/{run['run_id']}/events")).json()["events"]
    [answer] = [e["data"]["value"] for e in events if e["type"] == "input_received"]
    assert answer == {"scale": "fahrenheit"}


async def test_a_refused_answer_shows_the_servers_details_next_to_its_field(
    start_server: Any, new_page: Any
) -> None:
    """An integer field: a fraction is caught on the page (nothing sent); 50 against a maximum
    of 5 is the server's 422, whose detail shows next to the field while the run keeps
    waiting; 3 is taken and the run completes with it."""
    server = await start_server(hitl_registry())
    page = await new_page()
    await sign_in(page, server.url + "/", "ada")
    schema = {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": 1, "maximum": 5, "title": "Count"},
            "note": {"type": "string", "title": "Note"},
        },
        "required": ["count"],
    }
    card = await start_asker(page, schema)
    form = await wait_for_question(card, "Your answer?")
    count = form.get_by_label("Count")
    send = form.get_by_role("button", name="Send answer")
    field_error = form.locator(".field[data-field=count] .field-error")

    await count.fill("2.5")
    await send.click()
    await expect(field_error).to_have_text("Enter a whole number.")
    await expect(count).to_have_attribute("aria-invalid", "true")

    await count.fill("50")
    await send.click()
    await expect(field_error).to_have_text(re.compile(r"50 is greater than the maximum of 5"))
    await expect(form.locator(".form-errors")).to_contain_text("check value.count")
    await expect(count).to_be_focused()
    run = await stored_run(server, "ada", await card.get_attribute("data-run-id"))
    assert run["status"] == "waiting"
    await expect(card).to_have_attribute("data-status", "waiting")

    await count.fill("3")
    await send.click()
    await expect(card).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
    run = await shows_every_event_once(server, "ada", card)
    assert run["output"] == {"answers": [{"count": 3}]}  # the empty optional note is left out


async def test_plain_and_free_answers_are_sent_as_the_value_itself(
    start_server: Any, new_page: Any
) -> None:
    """A schema that is not an object is one field whose value is the answer (an integer); no
    schema is a free answer: text stays text, an object typed as JSON is sent as one."""
    server = await start_server(hitl_registry())
    page = await new_page()
    await sign_in(page, server.url + "/", "ben")

    card = await start_asker(page, {"type": "integer", "title": "How many?"})
    form = await wait_for_question(card, "Your answer?")
    await form.get_by_label("How many?").fill("7")
    await form.get_by_role("button", name="Send answer").click()
    await expect(card).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
    assert (await shows_every_event_once(server, "ben", card))["output"] == {"answers": [7]}

    card = await start_asker(page, None, questions=2)
    for text in ("forty two", '{"ok": true}'):
        form = await wait_for_question(card, "Your answer?")
        await form.get_by_label("Answer").fill(text)
        await form.get_by_role("button", name="Send answer").click()
        await expect(form).to_have_count(0)
    await expect(card).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
    run = await shows_every_event_once(server, "ben", card)
    assert run["output"] == {"answers": ["forty two", {"ok": True}]}


async def test_a_reloaded_page_and_a_second_tab_show_the_open_question(
    server: Any, new_page: Any
) -> None:
    """research asks before searching ("check with me"): after a reload the waiting run still
    shows its question, so does a second tab of the same user; answering "no" in one closes the
    form in the other, and the run completes without searching."""
    page = await new_page()
    await sign_in(page, server.url + "/", "carol")
    card = await start_run(page, "research", {"question": "What is 6 * 7? Check with me."})
    prompt = "Shall I search my reference documents as well?"
    await wait_for_question(card, prompt)
    run_id = await card.get_attribute("data-run-id")

    await page.reload()
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    card = page.locator(f'#runs article.run[data-run-id="{run_id}"]')
    form = await wait_for_question(card, prompt)
    search = form.get_by_label("Search")
    await expect(search).to_be_checked()  # the schema's default

    other = await new_page()
    await sign_in(other, server.url + "/", "carol")
    other_card = other.locator(f'#runs article.run[data-run-id="{run_id}"]')
    other_form = await wait_for_question(other_card, prompt)

    await search.uncheck()
    await form.get_by_role("button", name="Send answer").click()
    for shown in (card, other_card):
        await expect(shown).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
        await expect(shown.locator("li.ev[data-type=input_received]")).to_contain_text(
            '"search": false'
        )
    await expect(other_form).to_have_count(0)
    await expect(other_card.locator(".question-answered")).to_be_visible()
    for shown in (card, other_card):
        run = await shows_every_event_once(server, "carol", shown)
        await expect(shown.locator(".output-answer")).to_have_text(run["output"]["answer"])
    assert run["output"]["sources"] == []
    assert "6 * 7 = 42" in run["output"]["answer"]
    await expect(card.locator("li[data-call-id] .tool-name")).to_have_text(["calculator"])


async def test_an_answer_to_a_question_closed_meanwhile_says_so(server: Any, new_page: Any) -> None:
    """The page stops hearing from the server (its socket's messages are held back), the
    question is answered elsewhere, then the person sends theirs: the server's 409 closes the
    form with a sentence saying the question was already answered."""
    page = await new_page()
    held = {"on": False}

    async def route(ws: Any) -> None:
        server_ws = ws.connect_to_server()
        server_ws.on_message(lambda message: None if held["on"] else ws.send(message))

    await page.route_web_socket(re.compile(r"/v1/ws$"), route)
    await sign_in(page, server.url + "/", "dan")
    card = await start_run(page, "research", {"question": "Convert 20 degrees to kelvin"})
    form = await wait_for_question(card, "By 20 degrees, do you mean Celsius or Fahrenheit?")
    held["on"] = True

    run_id = await card.get_attribute("data-run-id")
    async with server.client("dan") as http:
        events = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]
        [request_id] = [e["data"]["request_id"] for e in events if e["type"] == "input_requested"]
        answered = await http.post(
            f"/v1/runs/{run_id}/input",
            json={"request_id": request_id, "value": {"scale": "celsius"}},
        )
        assert answered.status_code == 202, answered.text

    await form.get_by_label("Scale").select_option(label="fahrenheit")
    await form.get_by_role("button", name="Send answer").click()
    await expect(card.locator(".question-closed")).to_have_text(
        "This question was already answered, or it is closed."
    )
    await expect(card.locator("form.question-form")).to_have_count(0)
    async with server.client("dan") as http:
        events = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]
    assert [e["data"]["value"] for e in events if e["type"] == "input_received"] == [
        {"scale": "celsius"}
    ]


async def test_cancelling_a_waiting_run_ends_it_and_closes_its_question(
    server: Any, new_page: Any
) -> None:
    """A question is announced to screen readers; Cancel on its waiting run ends the run
    cancelled at once, and the form gives way to a sentence saying the run ended — also when
    the ended run is opened after a reload."""
    page = await new_page()
    await sign_in(page, server.url + "/", "eve")
    card = await start_run(page, "research", {"question": "Convert 50 degrees to kelvin"})
    prompt = "By 50 degrees, do you mean Celsius or Fahrenheit?"
    await wait_for_question(card, prompt)
    await expect(page.locator("#announcer")).to_have_text(f"A research run asks you: {prompt}")

    await card.get_by_role("button", name="Cancel").click()
    await expect(card).to_have_attribute("data-status", "cancelled", timeout=RUN_TIMEOUT_MS)
    await expect(card.locator("form.question-form")).to_have_count(0)
    await expect(card.locator(".question-closed")).to_have_text("The run ended before an answer.")
    await expect(card.get_by_role("button", name="Cancel")).to_be_hidden()
    run = await shows_every_event_once(server, "eve", card)
    assert run["status"] == "cancelled"

    # After a reload the ended run is replayed when opened: its question shows, closed.
    await page.reload()
    card = page.locator(f'#runs article.run[data-run-id="{run["run_id"]}"]')
    await expect(card).to_have_attribute("data-status", "cancelled")
    await card.locator(".run-toggle").click()
    await shows_every_event_once(server, "eve", card)
    await expect(card.locator(".question-prompt")).to_have_text(prompt)
    await expect(card.locator(".question-closed")).to_have_text("The run ended before an answer.")
    await expect(card.locator("form.question-form")).to_have_count(0)


async def test_an_old_waiting_run_beyond_the_first_page_still_shows_its_question(
    server: Any, new_page: Any
) -> None:
    """A run waits for an answer behind 20 newer runs: the page lists the newest 20 and the
    waiting one too, with its question, which is answered from there."""
    async with server.client("gil") as http:
        resp = await http.post(
            "/v1/runs", json={"agent": "research", "input": {"question": "Check with me: pi?"}}
        )
        waiting_id = resp.json()["run_id"]
        deadline = asyncio.get_running_loop().time() + RUN_TIMEOUT_MS / 1000
        while (await http.get(f"/v1/runs/{waiting_id}")).json()["status"] != "waiting":
            assert asyncio.get_running_loop().time() < deadline, "the run never asked"
            await asyncio.sleep(0.02)
        for n in range(20):
            resp = await http.post("/v1/runs", json={"agent": "echo", "input": {"message": f"{n}"}})
            assert resp.status_code == 202, resp.text
    page = await new_page()
    await sign_in(page, server.url + "/", "gil")
    await expect(page.locator("#runs article.run")).to_have_count(21)
    card = page.locator(f'#runs article.run[data-run-id="{waiting_id}"]')
    form = await wait_for_question(card, "Shall I search my reference documents as well?")
    await form.get_by_role("button", name="Send answer").click()
    await expect(card).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
    await shows_every_event_once(server, "gil", card)
