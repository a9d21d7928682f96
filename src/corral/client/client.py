"""``AsyncClient``: the HTTP API of one corral server as one user, its streams and sessions."""

from __future__ import annotations

import enum
import uuid
from typing import Any, cast
from urllib.parse import quote

import httpx

from corral.client.agui import AguiStream
from corral.client.session import Session, SessionState
from corral.client.stream import RunStream
from corral.client.transport import Auth, Backoff, Http
from corral.client.types import Agent, Event, Me, Run, RunPage, Thread, ThreadPage, TokenProvider

EVENTS_PAGE = 1000
_UNSET: Any = object()


class ClientState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


def _path(kind: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"a {kind} id is a non-empty string")
    return quote(value, safe="")


def _new_key() -> str:
    return f"py-{uuid.uuid4().hex}"


class AsyncClient:
    """A client of the corral server at ``base_url`` (with its mount prefix, if any), acting
    as the user of ``token`` — or of the tokens ``token_provider`` gives (an async callable,
    asked before the first request, on every stream and socket (re)connect, and after a 401 or
    a socket closed 1008).

    Use it as an async context manager (``async with AsyncClient(url, token=t) as client``);
    ``aclose()`` closes its connections. Methods are safe to call from many tasks at once.
    Reads, deletes and starts (which always carry an idempotency key) are retried after a
    dropped connection or a 502/503/504, with backoff; a cancel or an input answer whose
    earlier attempt may have landed reads the run instead of reporting a conflict. Every
    refusal raises :class:`~corral.client.CorralAPIError`.

    ``http`` lends an ``httpx.AsyncClient`` with this ``base_url`` to use (its pool shared by
    the clients of many users, say); it is not closed by this client. ``transport`` is passed
    to the one this client makes otherwise.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 6,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise TypeError(f"base_url is an http:// or https:// address, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._own_http = http is None
        self._httpx = http or httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, trust_env=False
        )
        self._state = ClientState.OPEN
        self._sessions: set[Session] = set()
        self._http = Http(
            self._httpx,
            Auth(token, token_provider),
            Backoff(min_backoff_s, max_backoff_s, retries),
            lambda: self._state is ClientState.CLOSED,
        )
        if not self._own_http and str(self._httpx.base_url).rstrip("/") != self.base_url:
            raise TypeError("a lent httpx.AsyncClient must have this client's base_url")

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the sessions this client opened and its HTTP connections. Idempotent."""
        if self._state is ClientState.CLOSED:
            return
        self._state = ClientState.CLOSED
        for session in list(self._sessions):
            await session.aclose()
        if self._own_http:
            await self._httpx.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self._http.request(method, path, **kwargs)

    # -- who and what ---------------------------------------------------------------------------

    async def me(self) -> Me:
        """``GET /v1/me``: the caller's user id and roles."""
        return cast(Me, await self._call("GET", "/v1/me", retry=True))

    async def agents(self) -> list[Agent]:
        """``GET /v1/agents``: the agents the caller may run, with their input schemas."""
        return cast(list[Agent], await self._call("GET", "/v1/agents", retry=True))

    # -- runs -----------------------------------------------------------------------------------

    async def start_run(
        self,
        agent: str,
        input: dict[str, Any],
        thread_id: str | None = None,
        idempotency_key: str | None = None,
        *,
        multitask: str | None = None,
        timeout_s: float | None = None,
    ) -> Run:
        """``POST /v1/runs``: start a run; returns the run object.

        ``idempotency_key`` (one is made when absent) makes retries safe: however often the
        request is repeated after a lost answer, one run starts. It is in one key space with
        the WebSocket's ``client_ref``.
        """
        body = _run_body(agent, input, thread_id, multitask, timeout_s)
        key = idempotency_key or _new_key()
        return cast(
            Run,
            await self._call(
                "POST", "/v1/runs", json=body, headers={"Idempotency-Key": key}, retry=True
            ),
        )

    async def get_run(self, run_id: str) -> Run:
        return cast(Run, await self._call("GET", f"/v1/runs/{_path('run', run_id)}", retry=True))

    async def list_runs(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RunPage:
        """``GET /v1/runs``: a page of the caller's runs, newest first, and ``next_cursor``."""
        params = _params(thread_id=thread_id, status=status, limit=limit, cursor=cursor)
        return cast(RunPage, await self._call("GET", "/v1/runs", params=params, retry=True))

    async def cancel_run(self, run_id: str) -> Run:
        """``POST /v1/runs/{id}/cancel``; a finished run is a ``conflict`` — unless an earlier
        attempt of this call may have landed, then the run as it is now."""
        path = f"/v1/runs/{_path('run', run_id)}"
        return cast(
            Run,
            await self._call(
                "POST", f"{path}/cancel", retry=True, replayed=lambda: self.get_run(run_id)
            ),
        )

    async def send_input(self, run_id: str, request_id: str, value: Any) -> Run:
        """``POST /v1/runs/{id}/input``: answer the run's open input request (contract §9)."""
        path = f"/v1/runs/{_path('run', run_id)}"
        return cast(
            Run,
            await self._call(
                "POST",
                f"{path}/input",
                json={"request_id": request_id, "value": value},
                retry=True,
                replayed=lambda: self.get_run(run_id),
            ),
        )

    async def events(self, run_id: str, after: int = 0, *, limit: int | None = None) -> list[Event]:
        """``GET /v1/runs/{id}/events``: the stored events with ``seq > after``, in order —
        all of them (page by page), or at most ``limit``."""
        path = f"/v1/runs/{_path('run', run_id)}/events"
        out: list[Event] = []
        while True:
            want = EVENTS_PAGE if limit is None else min(EVENTS_PAGE, limit - len(out))
            page = await self._call("GET", path, params={"after": after, "limit": want}, retry=True)
            events = cast(list[Event], page["events"])
            out.extend(events)
            if len(events) < want or (limit is not None and len(out) >= limit):
                return out
            after = events[-1]["seq"]

    def stream(self, run_id: str, after: int = 0) -> RunStream:
        """The run's events after ``after`` over SSE, whole across drops (:class:`RunStream`)."""
        _path("run", run_id)
        return RunStream(self._http, run_id, after)

    def start_and_stream(
        self,
        agent: str,
        input: dict[str, Any],
        thread_id: str | None = None,
        idempotency_key: str | None = None,
        *,
        multitask: str | None = None,
        timeout_s: float | None = None,
    ) -> RunStream:
        """Start a run and stream it in one request (``POST /v1/runs/stream``); the stream's
        ``run`` is the run object once the first message arrived. Retries are safe: they
        carry the idempotency key (made when absent)."""
        body = _run_body(agent, input, thread_id, multitask, timeout_s)
        return RunStream(self._http, None, start=(body, idempotency_key or _new_key()))

    def session(self, *, resume_unfinished: bool = True, queue_size: int = 1000) -> Session:
        """Every event of every run of the user over one WebSocket (:class:`Session`); use it
        as ``async with client.session() as session``. With ``resume_unfinished``, runs that
        are unfinished when it opens are delivered from their first event."""
        session = Session(
            self._http, self.base_url, resume_unfinished=resume_unfinished, queue_size=queue_size
        )
        self._sessions = {s for s in self._sessions if s.state is not SessionState.CLOSED}
        self._sessions.add(session)
        return session

    def ag_ui(
        self, agent: str, run_input: dict[str, Any], idempotency_key: str | None = None
    ) -> AguiStream:
        """``POST /v1/ag-ui/{agent}`` with an AG-UI ``RunAgentInput``: the run's AG-UI events
        (:class:`AguiStream`), each once, resumed after any drop, ending after ``RUN_FINISHED``
        or ``RUN_ERROR``. For AG-UI in Python; the corral events are in :meth:`stream`."""
        _path("agent", agent)
        return AguiStream(self._http, quote(agent, safe=""), run_input, idempotency_key)

    # -- threads (contract §10) -----------------------------------------------------------------

    async def create_thread(
        self, *, title: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Thread:
        body = {k: v for k, v in (("title", title), ("metadata", metadata)) if v is not None}
        return cast(Thread, await self._call("POST", "/v1/threads", json=body))

    async def list_threads(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> ThreadPage:
        params = _params(limit=limit, cursor=cursor)
        return cast(ThreadPage, await self._call("GET", "/v1/threads", params=params, retry=True))

    async def get_thread(self, thread_id: str) -> Thread:
        path = f"/v1/threads/{_path('thread', thread_id)}"
        return cast(Thread, await self._call("GET", path, retry=True))

    async def update_thread(
        self, thread_id: str, *, title: str | None = _UNSET, metadata: dict[str, Any] = _UNSET
    ) -> Thread:
        """``PATCH /v1/threads/{id}``: only the fields given are sent."""
        body = {k: v for k, v in (("title", title), ("metadata", metadata)) if v is not _UNSET}
        path = f"/v1/threads/{_path('thread', thread_id)}"
        return cast(Thread, await self._call("PATCH", path, json=body, retry=True))

    async def delete_thread(self, thread_id: str) -> None:
        """``DELETE /v1/threads/{id}``: its unfinished runs are cancelled, then it is gone."""
        await self._call("DELETE", f"/v1/threads/{_path('thread', thread_id)}", retry=True)


def _run_body(
    agent: str,
    input: dict[str, Any],
    thread_id: str | None,
    multitask: str | None,
    timeout_s: float | None,
) -> dict[str, Any]:
    if not isinstance(agent, str) or not agent:
        raise TypeError("agent is a name from agents()")
    body: dict[str, Any] = {"agent": agent, "input": input}
    for name, value in (
        ("thread_id", thread_id),
        ("multitask", multitask),
        ("timeout_s", timeout_s),
    ):
        if value is not None:
            body[name] = value
    return body


def _params(**values: str | int | None) -> dict[str, str | int]:
    return {k: v for k, v in values.items() if v is not None}
