"""``AsyncClient.stream`` and ``start_and_stream`` against a real server — directly, and through
a TCP proxy that cuts every connection at a random byte: each run's events arrive exactly once,
seq 1..N, none of another run, and a start retried through the cuts starts one run."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest

from conftest import LiveServer
from corral.client import AsyncClient, CorralAPIError, RunStream
from cutting_proxy import CuttingProxy
from support import check_run_events

SEED_ENV = "CORRAL_TEST_SEED"
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SLOW = {"message": "through the cuts " + "x" * 200, "steps": 20, "delay_ms": 5}


def user() -> str:
    return f"st-{uuid.uuid4().hex[:8]}"


async def collect(stream: RunStream) -> list[dict[str, Any]]:
    async with asyncio.timeout(60):
        return [dict(e) async for e in stream]


async def test_stream_yields_the_stored_events_and_resumes_after_a_seq(
    server: LiveServer,
) -> None:
    """stream(run) is the run's stored events, ending after the terminal one; stream(run,
    after=N) starts at N+1; start_and_stream sets run and streams the new run."""
    async with AsyncClient(server.url, token=server.token(user())) as client:
        streamed = client.start_and_stream("echo", {"message": "m", "steps": 3})
        events = await collect(streamed)
        assert streamed.run is not None
        run_id = streamed.run["run_id"]
        assert {e["run_id"] for e in events} == {run_id}
        check_run_events(events)
        assert events == [dict(e) for e in await client.events(run_id)]
        assert await collect(client.stream(run_id)) == events
        assert await collect(client.stream(run_id, after=4)) == events[4:]
        assert await collect(client.stream(run_id, after=len(events))) == []


@sqlite_only
async def test_stream_refusals_raise(server: LiveServer) -> None:
    """Another user's run is not_found; a start the server refuses raises its code."""
    async with (
        AsyncClient(server.url, token=server.token(user())) as alice,
        AsyncClient(server.url, token=server.token(user())) as bob,
    ):
        run = await alice.start_run("echo", {"message": "m"})
        with pytest.raises(CorralAPIError) as missing:
            await collect(bob.stream(run["run_id"]))
        assert missing.value.code == "not_found"
        with pytest.raises(CorralAPIError) as invalid:
            await collect(bob.start_and_stream("echo", {"steps": 2}))
        assert invalid.value.code == "validation_error"


@sqlite_only
@pytest.mark.slow
async def test_streams_through_a_cutting_proxy_are_whole_and_start_each_run_once(
    server: LiveServer,
) -> None:
    """Two users, each starting three runs with start_and_stream and following a fourth with
    stream(), all through a proxy that cuts connections mid-stream (and mid-request): every
    run's events exactly as stored, and one run per start."""
    seed = int(os.environ.get(SEED_ENV, "20261201"))
    port = int(server.url.rsplit(":", 1)[1])
    users = [user(), user()]
    async with CuttingProxy("127.0.0.1", port, seed=seed) as proxy:
        try:

            async def one_user(name: str) -> tuple[list[RunStream], list[list[dict[str, Any]]]]:
                token = server.token(name)
                async with (
                    AsyncClient(proxy.url, token=token, min_backoff_s=0.01, retries=30) as cut,
                    AsyncClient(server.url, token=token) as direct,
                ):
                    followed = await direct.start_run("echo", SLOW)
                    streams = [
                        cut.start_and_stream("echo", {**SLOW, "message": f"run {n}"})
                        for n in range(3)
                    ]
                    streams.append(cut.stream(followed["run_id"]))
                    results = await asyncio.gather(*(collect(s) for s in streams))
                    return streams, results

            outcome = await asyncio.gather(*(one_user(u) for u in users))
        except BaseException as exc:
            exc.add_note(f"cutting proxy seed {seed} ({SEED_ENV}={seed} repeats the cuts)")
            raise
    for name, (streams, results) in zip(users, outcome, strict=True):
        async with AsyncClient(server.url, token=server.token(name)) as direct:
            runs = (await direct.list_runs())["runs"]
            assert len(runs) == 4, "a start retried through a cut started a second run"
            mine = {r["run_id"] for r in runs}
            for stream, events in zip(streams, results, strict=True):
                assert stream.run_id in mine
                assert {e["run_id"] for e in events} == {stream.run_id}
                check_run_events(events)
                assert events == [dict(e) for e in await direct.events(stream.run_id)]
    assert proxy.cuts["sse"] >= 2, proxy.cuts
    assert sum(s.reconnects for streams, _ in outcome for s in streams) >= 2
