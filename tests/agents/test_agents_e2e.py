"""The built-in agents of contract §6, end to end through a real server (HTTP, SSE, WebSocket).

``echo`` is pinned event by event, with its input limits; ``research`` answers a fixed set of
questions with the expected tool calls and cited documents, deterministically; the calculator
refuses anything but arithmetic when called as a tool inside a real run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from pydantic import BaseModel, ConfigDict

from corral.agents import echo, research
from corral.core.registry import AgentRegistry
from corral.errors import ToolCallError
from support import check_run_events

TIMEOUT = 20.0
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

# What these tests check is the agents, not the store: SQLite is enough for most of them. The
# echo sequence, which every other test and the load test lean on, runs on both databases.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


# -- helpers ----------------------------------------------------------------------------------


async def read_sse(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    """The events of a run's SSE stream, read until the server ends it after the terminal."""
    events: list[dict[str, Any]] = []
    async with http.stream("GET", f"/v1/runs/{run_id}/stream") as resp:
        assert resp.status_code == 200, (await resp.aread()).decode()
        fields: dict[str, str] = {}
        async for line in resp.aiter_lines():
            if line == "":
                if fields:
                    event = json.loads(fields["data"])
                    assert fields["id"] == str(event["seq"]), fields
                    assert fields["event"] == event["type"], fields
                    events.append(event)
                    fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return events


async def run_over_http(
    http: httpx.AsyncClient, agent: str, input: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """POST a run, follow its SSE stream to the end; the finished run object and its events.

    The streamed events are checked against the contract's rules and against the stored ones.
    """
    resp = await http.post("/v1/runs", json={"agent": agent, "input": input})
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    events = await asyncio.wait_for(read_sse(http, run_id), TIMEOUT)
    check_run_events(events)
    stored = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]
    assert stored == events, "the SSE stream and the stored events differ"
    run = (await http.get(f"/v1/runs/{run_id}")).json()
    assert run["last_seq"] == len(events), run
    return run, events


async def run_over_websocket(
    server: Any, user: str, agent: str, input: dict[str, Any]
) -> tuple[str, list[dict[str, Any]]]:
    """``start_run`` over ``/v1/ws``; the run id and its live events up to the terminal one."""
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    async with websockets.connect(server.ws_url, additional_headers=headers) as ws:

        async def recv() -> dict[str, Any]:
            return orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))

        assert await recv() == {"type": "ready", "user_id": user}
        ref = f"e2e-{uuid.uuid4().hex}"  # an idempotency key: one per start
        start = {"type": "start_run", "agent": agent, "input": input, "client_ref": ref}
        await ws.send(orjson.dumps(start).decode())
        accepted = await recv()
        assert accepted["type"] == "run_accepted", accepted
        assert accepted["client_ref"] == ref
        run_id = str(accepted["run"]["run_id"])
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in TERMINAL:
            msg = await recv()
            assert msg.get("run_id") == run_id, f"unexpected message {msg}"
            events.append(msg)
    check_run_events(events)
    return run_id, events


def check_echo_steps(events: list[dict[str, Any]], message: str, steps: int) -> None:
    """``agent_started {"agent": "echo"}``, then ``steps`` × (thinking, tool pair), as §6 says."""
    assert events[0]["type"] == "agent_started"
    assert events[0]["data"] == {"agent": "echo"}
    body = events[1 : 1 + 3 * steps]
    assert [e["type"] for e in body] == [
        "agent_thinking",
        "tool_executing",
        "tool_completed",
    ] * steps
    call_ids = []
    for i in range(steps):
        thinking, executing, completed = body[3 * i : 3 * i + 3]
        assert message in thinking["data"]["text"], thinking
        assert executing["data"]["tool"] == "echo"
        assert executing["data"]["args"] == {"text": message}
        call_id = executing["data"]["call_id"]
        assert isinstance(call_id, str)
        assert call_id
        assert completed["data"]["call_id"] == call_id
        assert completed["data"]["tool"] == "echo"
        assert completed["data"]["status"] == "success"
        assert completed["data"]["result"] == {"text": message}
        assert isinstance(completed["data"]["duration_ms"], int | float)
        call_ids.append(call_id)
    assert len(set(call_ids)) == steps, f"call ids repeat: {call_ids}"


def check_envelopes(events: list[dict[str, Any]], run_id: str) -> None:
    """Every event is ``{type, run_id, thread_id, seq, ts, data}`` of this one run and thread."""
    thread_ids = {e["thread_id"] for e in events}
    assert len(thread_ids) == 1, thread_ids
    for e in events:
        assert set(e) == {"type", "run_id", "thread_id", "seq", "ts", "data"}, e
        assert e["run_id"] == run_id
        assert TS.match(e["ts"]), e["ts"]


def ts(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["ts"])


# -- echo -------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 3])
async def test_echo_sends_exactly_the_contract_sequence_over_the_websocket(
    server: Any, steps: int
) -> None:
    """agent_started, then per step thinking (with the message) and an echo tool call returning
    {"text": message}, then agent_completed {"message", "steps"} — live, stored and over SSE."""
    message = "héllo, corral — «echo» 🐑"
    run_id, events = await run_over_websocket(
        server, "alice", "echo", {"message": message, "steps": steps}
    )
    assert len(events) == 2 + 3 * steps
    check_envelopes(events, run_id)
    check_echo_steps(events, message, steps)
    last = events[-1]
    assert last["type"] == "agent_completed"
    assert last["data"]["output"] == {"message": message, "steps": steps}
    assert isinstance(last["data"]["duration_ms"], int | float)
    async with server.client("alice") as http:
        assert await asyncio.wait_for(read_sse(http, run_id), TIMEOUT) == events
        run = (await http.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "succeeded"
    assert run["output"] == {"message": message, "steps": steps}
    assert run["error"] is None


async def test_echo_steps_default_to_one(server: Any) -> None:
    """Input ``{"message"}`` alone runs one step and reports ``steps: 1``."""
    async with server.client("alice") as http:
        run, events = await run_over_http(http, "echo", {"message": "once"})
    check_echo_steps(events, "once", 1)
    assert len(events) == 5
    assert run["output"] == {"message": "once", "steps": 1}


@sqlite_only
async def test_echo_with_fail_ends_in_agent_failed_after_all_its_steps(server: Any) -> None:
    """With ``fail`` every step still runs, then the terminal event is agent_error agent_failed."""
    async with server.client("alice") as http:
        run, events = await run_over_http(
            http, "echo", {"message": "doomed", "steps": 2, "fail": True}
        )
    assert len(events) == 2 + 3 * 2
    check_echo_steps(events, "doomed", 2)
    last = events[-1]
    assert last["type"] == "agent_error"
    assert last["data"]["error"]["type"] == "agent_failed"
    assert isinstance(last["data"]["error"]["message"], str)
    assert isinstance(last["data"]["duration_ms"], int | float)
    assert run["status"] == "failed"
    assert run["error"]["type"] == "agent_failed"
    assert run["output"] is None


@sqlite_only
async def test_echo_waits_delay_ms_before_each_step(server: Any) -> None:
    """Each step starts at least ``delay_ms`` after the previous one (and after agent_started)."""
    async with server.client("alice") as http:
        _run, events = await run_over_http(
            http, "echo", {"message": "slow", "steps": 3, "delay_ms": 120}
        )
    starts = [events[0]] + [e for e in events if e["type"] == "agent_thinking"]
    assert len(starts) == 4
    for before, after in itertools.pairwise(starts):
        # ts has microseconds; the sleep happens between the two emits.
        assert ts(after) - ts(before) >= timedelta(milliseconds=119), (before, after)


@sqlite_only
@pytest.mark.parametrize(
    "input",
    [
        pytest.param({"message": "x" * 8192}, id="message-8192-chars"),
        pytest.param({"message": ""}, id="message-empty"),
        pytest.param({"message": "m", "steps": 100}, id="steps-100"),
        pytest.param({"message": "m", "delay_ms": 0}, id="delay-0"),
        pytest.param({"message": "m", "fail": False}, id="fail-false"),
    ],
)
async def test_echo_accepts_input_at_its_limits(server: Any, input: dict[str, Any]) -> None:
    """Inputs at the contract's limits are accepted and echoed back in full."""
    async with server.client("alice") as http:
        run, events = await run_over_http(http, "echo", input)
    steps = input.get("steps", 1)
    assert run["status"] == "succeeded"
    assert run["output"] == {"message": input["message"], "steps": steps}
    assert len(events) == 2 + 3 * steps
    check_echo_steps(events, input["message"], steps)


@sqlite_only
async def test_echo_accepts_the_longest_delay(server: Any) -> None:
    """``delay_ms`` 10000 is accepted (the run is cancelled rather than waited for)."""
    async with server.client("alice") as http:
        resp = await http.post(
            "/v1/runs", json={"agent": "echo", "input": {"message": "m", "delay_ms": 10_000}}
        )
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["run_id"]
        assert (await http.post(f"/v1/runs/{run_id}/cancel")).status_code == 202
        events = await asyncio.wait_for(read_sse(http, run_id), TIMEOUT)
    check_run_events(events)
    assert events[-1]["type"] == "agent_cancelled"


@sqlite_only
@pytest.mark.parametrize(
    ("input", "field"),
    [
        pytest.param({"message": "x" * 8193}, "message", id="message-8193-chars"),
        pytest.param({}, "message", id="message-missing"),
        pytest.param({"message": 42}, "message", id="message-not-str"),
        pytest.param({"message": None}, "message", id="message-null"),
        pytest.param({"message": "m", "steps": 0}, "steps", id="steps-0"),
        pytest.param({"message": "m", "steps": 101}, "steps", id="steps-101"),
        pytest.param({"message": "m", "steps": 1.5}, "steps", id="steps-fraction"),
        pytest.param({"message": "m", "steps": "3"}, "steps", id="steps-str"),
        pytest.param({"message": "m", "steps": True}, "steps", id="steps-bool"),
        pytest.param({"message": "m", "delay_ms": "5"}, "delay_ms", id="delay-str"),
        pytest.param({"message": "m", "delay_ms": -1}, "delay_ms", id="delay-negative"),
        pytest.param({"message": "m", "delay_ms": 10_001}, "delay_ms", id="delay-10001"),
        pytest.param({"message": "m", "fail": "yes"}, "fail", id="fail-str-yes"),
        pytest.param({"message": "m", "fail": "true"}, "fail", id="fail-str-true"),
        pytest.param({"message": "m", "fail": 1}, "fail", id="fail-int"),
        pytest.param({"message": "m", "fail": None}, "fail", id="fail-null"),
    ],
)
async def test_echo_refuses_input_outside_its_limits_with_422(
    server: Any, input: dict[str, Any], field: str
) -> None:
    """Input outside §6's limits or types is 422 validation_error naming the field; no run."""
    async with server.client("alice") as http:
        resp = await http.post("/v1/runs", json={"agent": "echo", "input": input})
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["code"] == "validation_error"
        assert any(field in str(d.get("field", "")) for d in error["details"]), error
        assert (await http.get("/v1/runs")).json()["runs"] == []


@sqlite_only
async def test_echo_refuses_bad_input_over_the_websocket_too(server: Any) -> None:
    """``start_run`` with steps 101 gets an ``error`` validation_error; the socket stays usable."""
    headers = {"Authorization": f"Bearer {server.token('alice')}"}
    async with websockets.connect(server.ws_url, additional_headers=headers) as ws:

        async def recv() -> dict[str, Any]:
            return orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))

        assert (await recv())["type"] == "ready"
        bad = {"type": "start_run", "agent": "echo", "input": {"message": "m", "steps": 101}}
        await ws.send(orjson.dumps(bad).decode())
        error = await recv()
        assert error["type"] == "error", error
        assert error["code"] == "validation_error", error
        await ws.send(orjson.dumps({"type": "ping"}).decode())
        assert await recv() == {"type": "pong"}


# -- research ---------------------------------------------------------------------------------

# question → the tool calls expected, in order, as (tool, the args that matter); what the answer
# must contain (a "[1] Title" pins the best match); source ids that must be among those cited.
RESEARCH_CASES: list[tuple[str, list[tuple[str, dict[str, Any]]], list[str], list[str]]] = [
    (
        "What is 12 * 7?",
        [("calculator", {"expression": "12 * 7"}), ("search_docs", {})],
        ["84"],
        [],
    ),
    (
        "How many miles is 42 km?",
        [
            ("convert_units", {"value": 42, "from_unit": "km", "to_unit": "miles"}),
            ("search_docs", {}),
        ],
        ["26.0976 mi"],
        ["imperial-units"],
    ),
    (
        "Who was Alan Turing?",
        [("search_docs", {})],
        ["Turing machine", "[1] Alan Turing"],
        ["alan-turing"],
    ),
    (
        "How fast is the speed of light?",
        [("search_docs", {})],
        ["299,792,458 metres per second", "[1] Speed of light"],
        ["speed-of-light"],
    ),
    (
        "What is today's date?",
        [("current_date", {}), ("search_docs", {})],
        ["Today's date is"],
        [],
    ),
    (
        "How far is the Moon, and what is 3 * (4 + 5)? Convert 100 km to miles.",
        [
            ("calculator", {"expression": "3 * (4 + 5)"}),
            ("convert_units", {"value": 100, "from_unit": "km", "to_unit": "miles"}),
            ("search_docs", {}),
        ],
        ["3 * (4 + 5) = 27", "100 km = 62.1371 mi", "[1] The Moon"],
        ["moon"],
    ),
]


def tool_calls(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    """(tool, args, completion status) of each call, in order, pairing events by call id."""
    completed = {
        e["data"]["call_id"]: e["data"]["status"] for e in events if e["type"] == "tool_completed"
    }
    return [
        (e["data"]["tool"], e["data"]["args"], completed[e["data"]["call_id"]])
        for e in events
        if e["type"] == "tool_executing"
    ]


@sqlite_only
@pytest.mark.parametrize(
    ("question", "calls", "answer_has", "source_ids"),
    RESEARCH_CASES,
    ids=[case[0] for case in RESEARCH_CASES],
)
async def test_research_answers_with_the_expected_tools_and_sources(
    server: Any,
    question: str,
    calls: list[tuple[str, dict[str, Any]]],
    answer_has: list[str],
    source_ids: list[str],
) -> None:
    """Each question is worked out with the expected tool calls (all successful), the answer
    holds the computed values and cites its documents, and the streamed deltas add up to it."""
    day_before = datetime.now(UTC).date()
    async with server.client("alice") as http:
        run, events = await run_over_http(http, "research", {"question": question})
    day_after = datetime.now(UTC).date()
    assert run["status"] == "succeeded", run
    output = run["output"]
    assert set(output) == {"answer", "sources"}
    answer = output["answer"]
    assert isinstance(answer, str)
    assert answer

    made = tool_calls(events)
    assert [name for name, _args, _status in made] == [name for name, _ in calls], made
    for (_name, args, status), (_tool, expected) in zip(made, calls, strict=True):
        assert status == "success", made
        for key, value in expected.items():
            assert args[key] == value, (args, expected)
    search = [args for name, args, _ in made if name == "search_docs"]
    assert search == [{"query": question, "limit": 3}]

    for fragment in answer_has:
        assert fragment in answer, answer
    if "date" in question:
        assert any(f"{d.isoformat()} (UTC)" in answer for d in {day_before, day_after}), answer

    sources = output["sources"]
    ids = [s["id"] for s in sources]
    assert set(source_ids) <= set(ids), sources
    for n, source in enumerate(sources, start=1):
        assert isinstance(source["id"], str)
        assert source["id"]
        assert isinstance(source["title"], str)
        assert source["title"]
        assert f"[{n}] {source['title']}" in answer, (n, source, answer)

    # The answer streamed as agent_update answer_delta pieces that concatenate to it, after the
    # last tool call and before the terminal event.
    deltas = [e for e in events if e["type"] == "agent_update"]
    assert deltas
    assert all(e["data"]["kind"] == "answer_delta" for e in deltas)
    assert "".join(e["data"]["text"] for e in deltas) == answer
    last_tool = max(e["seq"] for e in events if e["type"] == "tool_completed")
    assert deltas[0]["seq"] > last_tool
    assert events[-1]["type"] == "agent_completed"
    assert events[-1]["data"]["output"] == output

    thinking = [e["data"] for e in events if e["type"] == "agent_thinking"]
    assert len(thinking) >= 3
    assert all(t["text"].strip() for t in thinking)
    assert [t["step"] for t in thinking] == sorted(t["step"] for t in thinking)
    assert {t["total_steps"] for t in thinking} == {thinking[-1]["step"]}


@sqlite_only
async def test_research_is_deterministic(server: Any) -> None:
    """The same question twice gives the same events (tool calls, thinking, deltas) and output."""

    def shape(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        out = []
        for e in events:
            data = {k: v for k, v in e["data"].items() if k not in {"call_id", "duration_ms"}}
            out.append((e["type"], data))
        return out

    question = RESEARCH_CASES[-1][0]
    async with server.client("alice") as http:
        first_run, first = await run_over_http(http, "research", {"question": question})
        second_run, second = await run_over_http(http, "research", {"question": question})
    assert shape(first) == shape(second)
    assert first_run["output"] == second_run["output"]


@sqlite_only
async def test_research_explains_a_calculation_that_fails_and_still_answers(server: Any) -> None:
    """1/0 ends its calculator call with status error; the run succeeds and says why."""
    async with server.client("alice") as http:
        run, events = await run_over_http(http, "research", {"question": "What is 1/0?"})
    made = tool_calls(events)
    assert made[0] == ("calculator", {"expression": "1/0"}, "error")
    failed = next(e for e in events if e["type"] == "tool_completed")
    assert "division by zero" in failed["data"]["error"]["message"]
    assert run["status"] == "succeeded"
    assert "division by zero" in run["output"]["answer"]


@sqlite_only
async def test_research_refuses_an_empty_question(server: Any) -> None:
    """``question`` is required and must hold text: missing or blank is 422."""
    async with server.client("alice") as http:
        for input in ({}, {"question": "   "}, {"question": 7}):
            resp = await http.post("/v1/runs", json={"agent": "research", "input": input})
            assert resp.status_code == 422, (input, resp.text)


# -- the calculator as a tool inside a run -----------------------------------------------------


class ProbeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expression: str


def probe_registry() -> AgentRegistry:
    """The built-in agents and tools, plus ``calc_probe``: an agent that hands its input to the
    real ``calculator`` tool verbatim. ``research`` only ever passes what looks like arithmetic,
    so this is how a hostile expression reaches the tool through a real run."""
    registry = AgentRegistry()
    echo.register(registry)
    research.register(registry)

    @registry.agent("calc_probe", input_model=ProbeInput)
    async def calc_probe(ctx: Any, params: ProbeInput) -> dict[str, Any]:
        try:
            return {"result": await ctx.tools.call("calculator", expression=params.expression)}
        except ToolCallError as exc:
            return {"refused": exc.message}

    return registry


@sqlite_only
async def test_calculator_tool_refuses_code_in_a_real_run(
    start_server: Any, tmp_path: Path
) -> None:
    """Names, calls, attributes, strings, lambdas and containers end the calculator call with
    status error and a reason; nothing is executed (the would-be side effect never happens)."""
    server = await start_server(registry=probe_registry())
    marker = tmp_path / "pwned"
    refused = {
        f"__import__('os').system('touch {marker}')": "function calls",
        "__import__('os')": "function calls",
        "open('/etc/passwd').read()": "function calls",
        "x + 1": "names",
        "(1).real": "attribute",
        "'a' * 3": "strings",
        "lambda: 1": "lambdas",
        "[1, 2][0]": "indexing",
        "2 ** 100000": "exponents are limited",
    }
    async with server.client("alice") as http:
        for expression, fragment in refused.items():
            run, events = await run_over_http(http, "calc_probe", {"expression": expression})
            assert run["status"] == "succeeded", run
            [executing] = [e for e in events if e["type"] == "tool_executing"]
            [completed] = [e for e in events if e["type"] == "tool_completed"]
            assert executing["data"]["tool"] == "calculator"
            assert executing["data"]["args"] == {"expression": expression}
            assert completed["data"]["status"] == "error", completed
            assert "result" not in completed["data"] or completed["data"]["result"] is None
            assert fragment in completed["data"]["error"]["message"], completed
            assert fragment in run["output"]["refused"]
        # The same path evaluates plain arithmetic.
        run, events = await run_over_http(http, "calc_probe", {"expression": "(2 + 3) * 4 ** 2"})
        assert run["output"]["result"]["value"] == 80
    assert not marker.exists(), "the calculator executed code"
