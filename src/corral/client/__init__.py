"""corral's Python client (contract §11): the whole, resumable stream in a few lines.

::

    from corral.client import AsyncClient

    async with AsyncClient("http://127.0.0.1:8000", token=token) as client:
        async for event in client.start_and_stream("echo", {"message": "hi", "steps": 3}):
            print(event["seq"], event["type"])

- :meth:`AsyncClient.stream` / :meth:`AsyncClient.start_and_stream`: one run's events over
  Server-Sent Events, resumed by ``seq`` after any drop, ending after the terminal event.
- :meth:`AsyncClient.session`: every event of every run of the user over one WebSocket that
  reconnects, resumes unfinished runs and drops duplicates.
- :meth:`AsyncClient.ag_ui`: a run in the AG-UI protocol, resumed after any drop.
- Every HTTP route of the API as a method; refusals raise :class:`CorralAPIError`.

It talks to a server only over HTTP and WebSocket (httpx, websockets) and imports nothing of
corral's server.
"""

from corral.client.agui import AguiStream
from corral.client.client import AsyncClient, ClientState
from corral.client.errors import CorralAPIError
from corral.client.session import Session, SessionState
from corral.client.socket import open_socket, ws_url
from corral.client.sse import SSEMessage, SSEParser
from corral.client.stream import RunStream
from corral.client.types import (
    TERMINAL_TYPES,
    Agent,
    Event,
    Me,
    Run,
    RunPage,
    Thread,
    ThreadPage,
    TokenProvider,
)

__all__ = [
    "TERMINAL_TYPES",
    "Agent",
    "AguiStream",
    "AsyncClient",
    "ClientState",
    "CorralAPIError",
    "Event",
    "Me",
    "Run",
    "RunPage",
    "RunStream",
    "SSEMessage",
    "SSEParser",
    "Session",
    "SessionState",
    "Thread",
    "ThreadPage",
    "TokenProvider",
    "open_socket",
    "ws_url",
]
