"""``research`` asks its user when a question calls for it (contract §9's demonstration): which
scale a bare "degrees" means, and — when told "check with me" — whether to search. Through a
real server, answered over HTTP; every other question is answered without asking (the pinned
cases of test_agents_e2e.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from corral.agents.units import find_bare_degrees
from support import check_run_events

TIMEOUT = 20.0
# What these check is the agent, not the store: SQLite is enough.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def ask_research(http: httpx.AsyncClient, question: str) -> str:
    resp = await http.post("/v1/runs", json={"agent": "research", "input": {"question": question}})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


async def events_of(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    return list((await http.get(f"/v1/runs/{run_id}/events")).json()["events"])


async def the_question(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            asked = [e for e in await events_of(http, run_id) if e["type"] == "input_requested"]
            if asked:
                return dict(asked[0]["data"])
            await asyncio.sleep(0.02)


async def finished(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            if run["status"] not in ("queued", "running", "waiting"):
                return dict(run)
            await asyncio.sleep(0.02)


def tools_called(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(e["data"]["tool"], e["data"]["args"]) for e in events if e["type"] == "tool_executing"]


@sqlite_only
async def test_a_temperature_without_a_scale_is_clarified_before_converting(server: Any) -> None:
    """ "Convert 100 degrees to kelvin": research asks which scale (an enum of the other two),
    refuses a choice outside it (422), and converts from the chosen one."""
    async with server.client("alice") as http:
        run_id = await ask_research(http, "Convert 100 degrees to kelvin")
        asked = await the_question(http, run_id)
        assert asked["prompt"] == "By 100 degrees, do you mean Celsius or Fahrenheit?"
        scale = asked["schema"]["properties"]["scale"]
        assert scale["enum"] == ["celsius", "fahrenheit"]
        assert asked["schema"]["required"] == ["scale"]
        url = f"/v1/runs/{run_id}/input"
        bad = await http.post(
            url, json={"request_id": asked["request_id"], "value": {"scale": "kelvin"}}
        )
        assert bad.status_code == 422, bad.text
        good = await http.post(
            url, json={"request_id": asked["request_id"], "value": {"scale": "fahrenheit"}}
        )
        assert good.status_code == 202, good.text
        run = await finished(http, run_id)
        events = await events_of(http, run_id)
    assert run["status"] == "succeeded", run
    check_run_events(events)
    assert "100°F = 310.928 K" in run["output"]["answer"]
    assert tools_called(events)[0] == (
        "convert_units",
        {"value": 100.0, "from_unit": "fahrenheit", "to_unit": "kelvin"},
    )


@sqlite_only
async def test_check_with_me_asks_before_searching_and_a_no_skips_the_search(server: Any) -> None:
    """ "... check with me": a yes/no question before the search; no → no search_docs call,
    yes → the search runs as usual."""
    question = "What is 6 * 7? Check with me before you search."
    async with server.client("alice") as http:
        runs = {}
        for reply in (False, True):
            run_id = await ask_research(http, question)
            asked = await the_question(http, run_id)
            assert asked["schema"]["properties"]["search"]["type"] == "boolean"
            resp = await http.post(
                f"/v1/runs/{run_id}/input",
                json={"request_id": asked["request_id"], "value": {"search": reply}},
            )
            assert resp.status_code == 202, resp.text
            runs[reply] = (await finished(http, run_id), await events_of(http, run_id))
    for reply, (run, events) in runs.items():
        assert run["status"] == "succeeded", run
        assert "6 * 7 = 42" in run["output"]["answer"]
        searched = [name for name, _ in tools_called(events)].count("search_docs")
        assert searched == (1 if reply else 0), (reply, tools_called(events))


@sqlite_only
async def test_unanswered_research_questions_fall_back_to_a_default(start_server: Any) -> None:
    """With no answer within CORRAL_INPUT_TIMEOUT_S, research takes Celsius and says so."""
    server = await start_server(input_timeout_s=0.3)
    async with server.client("alice") as http:
        run = await finished(http, await ask_research(http, "Convert 100 degrees to kelvin"))
        events = await events_of(http, run["run_id"])
    assert run["status"] == "succeeded", run
    assert "100°C = 373.15 K" in run["output"]["answer"]
    thoughts = [e["data"]["text"] for e in events if e["type"] == "agent_thinking"]
    assert any("take it as celsius" in t for t in thoughts), thoughts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Convert 100 degrees to kelvin", [(100.0, "kelvin")]),
        ("what is 30 degrees in fahrenheit?", [(30.0, "fahrenheit")]),
        ("100 degrees celsius to kelvin", []),
        ("convert 5 degrees to km", []),
        ("How many miles is 42 km?", []),
    ],
)
def test_find_bare_degrees(text: str, expected: list[tuple[float, str]]) -> None:
    assert find_bare_degrees(text) == expected
