"""The baselines the benchmarks compare corral against, each run as its own process.

``python bench/baselines.py runs --port P``
    A minimal Starlette app on the same stack as corral (uvicorn, httptools, uvloop, the
    websockets-sansio protocol) speaking the same protocol for the runs benchmark:
    ``POST /v1/runs`` checks the bearer JWT, makes a run in memory, answers 202 with a run
    object, and a task pushes the five events of a 1-step ``echo`` run — JSON of the same
    shape — to every ``/v1/ws`` socket of the user. No validation against agent schemas, no
    admission, no database: the floor for this protocol on this stack.

``python bench/baselines.py fanout --port P``
    A bare ``websockets`` server (``websockets.asyncio.server.serve`` on uvloop). Sockets
    join the group of the user named in ``?user=``; a ``{"frames": N, "size": S}`` message
    on any of them makes the server push N text frames of S bytes (the last one a
    terminal-looking event) to every socket of that user, one frame per loop iteration, as
    an agent emitting events one after another would — with nothing stored.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson


def _ts() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_runs_app(secret: str) -> Any:
    import jwt
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    sockets: dict[str, set[WebSocket]] = {}
    tasks: set[asyncio.Task[None]] = set()

    def user_of(header: str | None) -> str | None:
        if not header or not header.startswith("Bearer "):
            return None
        try:
            claims = jwt.decode(header[7:], secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return None
        sub = claims.get("sub")
        return sub if isinstance(sub, str) else None

    async def push(user: str, run: dict[str, Any], message: str) -> None:
        common = {"run_id": run["run_id"], "thread_id": run["thread_id"]}
        events = [
            ("agent_started", {"agent": "echo"}),
            ("agent_thinking", {"text": f"Echo step 1 of 1: {message}", "step": 1}),
            ("tool_executing", {"call_id": "call_1", "tool": "echo", "args": {"text": message}}),
            (
                "tool_completed",
                {"call_id": "call_1", "tool": "echo", "status": "success", "duration_ms": 0.01},
            ),
            ("agent_completed", {"output": {"message": message, "steps": 1}, "duration_ms": 1}),
        ]
        for seq, (kind, data) in enumerate(events, 1):
            body = orjson.dumps({"type": kind, **common, "seq": seq, "ts": _ts(), "data": data})
            for ws in tuple(sockets.get(user, ())):
                try:
                    await ws.send({"type": "websocket.send", "text": body.decode()})
                except Exception:
                    sockets.get(user, set()).discard(ws)
            await asyncio.sleep(0)  # an agent emits one event at a time

    async def start_run(request: Request) -> Response:
        user = user_of(request.headers.get("authorization"))
        if user is None:
            return Response(b'{"error":{"code":"unauthorized"}}', 401)
        doc = orjson.loads(await request.body())
        run = {
            "run_id": "run_" + secrets.token_urlsafe(16),
            "thread_id": "thread_" + secrets.token_urlsafe(16),
            "agent": doc.get("agent"),
            "status": "queued",
            "input": doc.get("input"),
            "output": None,
            "error": None,
            "created_at": _ts(),
            "started_at": None,
            "finished_at": None,
            "last_seq": 0,
        }
        task = asyncio.get_running_loop().create_task(
            push(user, run, str((doc.get("input") or {}).get("message", "")))
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return Response(orjson.dumps(run), 202, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def ws_endpoint(ws: WebSocket) -> None:
        user = user_of(ws.headers.get("authorization"))
        await ws.accept()
        if user is None:
            await ws.close(1008)
            return
        sockets.setdefault(user, set()).add(ws)
        await ws.send_text(orjson.dumps({"type": "ready", "user_id": user}).decode())
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            group = sockets.get(user)
            if group is not None:
                group.discard(ws)
                if not group:
                    del sockets[user]

    return Starlette(
        routes=[
            Route("/v1/runs", start_run, methods=["POST"]),
            Route("/healthz", healthz),
            WebSocketRoute("/v1/ws", ws_endpoint),
        ]
    )


def serve_runs(port: int) -> None:
    import uvicorn

    app = make_runs_app(os.environ["CORRAL_JWT_SECRET"])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        log_config=None,
        access_log=False,
        lifespan="off",
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            print(f"listening on {port}", flush=True)  # the harness waits for this line

    import uvloop

    uvloop.run(Server(config).serve())


async def serve_fanout(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    groups: dict[str, set[ServerConnection]] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def push(group: set[ServerConnection], frames: int, size: int) -> None:
        body = b'{"type":"agent_thinking","pad":"'
        payload = body + b"x" * max(0, size - len(body) - 2) + b'"}'
        last = b'{"type":"agent_completed","pad":"'
        final = last + b"x" * max(0, size - len(last) - 2) + b'"}'
        for i in range(frames):
            broadcast(tuple(group), final if i == frames - 1 else payload, text=True)
            await asyncio.sleep(0)

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        user = parse_qs(urlsplit(ws.request.path).query).get("user", ["anonymous"])[0]
        group = groups.setdefault(user, set())
        group.add(ws)
        await ws.send(b'{"type":"ready"}', text=True)
        try:
            async for message in ws:
                doc = orjson.loads(message)
                task = asyncio.get_running_loop().create_task(
                    push(group, int(doc["frames"]), int(doc["size"]))
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            group.discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        print(f"listening on {port}", flush=True)
        await asyncio.Future()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["runs", "fanout"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.kind == "runs":
        serve_runs(args.port)
    else:
        import uvloop

        uvloop.run(serve_fanout(args.port))


if __name__ == "__main__":
    main()
