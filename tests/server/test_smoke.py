"""The shortest path through the server: start a run over HTTP, watch it over WebSocket."""

from __future__ import annotations

import orjson
import websockets

from support import check_run_events


async def test_run_over_http_events_over_websocket(server) -> None:
    """A run started by POST reaches the owner's socket complete and in order."""
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": server.token("alice")}))
        ready = orjson.loads(await ws.recv())
        assert ready == {"type": "ready", "user_id": "alice"}
        async with server.client("alice") as http:
            body = {"agent": "echo", "input": {"message": "hi", "steps": 3}}
            resp = await http.post("/v1/runs", json=body)
            assert resp.status_code == 202, resp.text
            run_id = resp.json()["run_id"]
        events = []
        while not events or events[-1]["type"] not in ("agent_completed", "agent_error"):
            events.append(orjson.loads(await ws.recv()))
        assert {e["run_id"] for e in events} == {run_id}
        check_run_events(events)
        assert len(events) == 1 + 3 * 3 + 1
