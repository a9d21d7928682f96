"""``AsyncClient.ag_ui``: a run in the AG-UI protocol from Python — directly, and through a TCP
proxy that cuts connections at random bytes: the AG-UI events are the run's, each once, in
order, every one valid for the ``ag-ui-protocol`` models, and one request starts one run."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest

from conftest import LiveServer
from corral.client import AguiStream, AsyncClient
from cutting_proxy import CuttingProxy
from support_agui import Agui, check_order, get_agui, run_input, validate

SEED_ENV = "CORRAL_TEST_SEED"
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
LONG = {"message": "cut the AG-UI stream " * 12, "steps": 20, "delay_ms": 5}


def user() -> str:
    return f"pa-{uuid.uuid4().hex[:8]}"


async def collect(stream: AguiStream) -> list[dict[str, Any]]:
    async with asyncio.timeout(60):
        return [event async for event in stream]


async def expected(server: LiveServer, name: str, stream: AguiStream) -> list[dict[str, Any]]:
    """The run's whole AG-UI stream read directly, named as the request named it."""
    assert stream.run_id is not None
    async with server.client(name) as http:
        status, full, error = await get_agui(http, stream.run_id)
    assert status == 200, error
    return [a.event for a in full]


def named(events: list[dict[str, Any]], opening: dict[str, Any]) -> list[dict[str, Any]]:
    ids = {"runId": opening["runId"], "threadId": opening["threadId"]}
    rest = [{**e, **{k: v for k, v in ids.items() if k in e}} for e in events[1:]]
    return [opening, *rest]


async def test_ag_ui_yields_the_runs_ag_ui_events(server: LiveServer) -> None:
    """ag_ui(agent, RunAgentInput): RUN_STARTED with the request's ids, then every AG-UI event
    of the run, valid and in the protocol's order, ending with RUN_FINISHED; run_id is corral's."""
    name = user()
    body = run_input("What is 12 * 7?")
    async with AsyncClient(server.url, token=server.token(name)) as client:
        stream = client.ag_ui("research", body)
        events = await collect(stream)
    for event in events:
        validate(event)
    check_order([Agui(None, e) for e in events])
    assert (events[0]["runId"], events[0]["threadId"]) == (body["runId"], body["threadId"])
    assert events[-1]["type"] == "RUN_FINISHED"
    assert "84" in events[-1]["result"]["answer"]
    assert events == named(await expected(server, name, stream), events[0])


@sqlite_only
@pytest.mark.slow
async def test_ag_ui_through_a_cutting_proxy_is_whole_and_starts_each_run_once(
    server: LiveServer,
) -> None:
    """Four AG-UI runs through a proxy that cuts requests and streams: each yields exactly the
    run's AG-UI events (none twice, none missing, the request's names kept), and each request
    started one run."""
    seed = int(os.environ.get(SEED_ENV, "20261201"))
    port = int(server.url.rsplit(":", 1)[1])
    name = user()
    async with CuttingProxy("127.0.0.1", port, seed=seed) as proxy:
        try:
            async with AsyncClient(
                proxy.url, token=server.token(name), min_backoff_s=0.01, retries=30
            ) as client:
                streams = [
                    client.ag_ui("echo", run_input(forwardedProps={"input": {**LONG, "steps": n}}))
                    for n in (10, 15, 20, 25)
                ]
                results = await asyncio.gather(*(collect(s) for s in streams))
        except BaseException as exc:
            exc.add_note(f"cutting proxy seed {seed} ({SEED_ENV}={seed} repeats the cuts)")
            raise
    for stream, events in zip(streams, results, strict=True):
        for event in events:
            validate(event)
        check_order([Agui(None, e) for e in events])
        assert events == named(await expected(server, name, stream), events[0])
    async with AsyncClient(server.url, token=server.token(name)) as direct:
        assert len((await direct.list_runs())["runs"]) == len(streams)
    assert proxy.cuts["sse"] >= 2, proxy.cuts
    assert sum(s.reconnects for s in streams) >= 2
