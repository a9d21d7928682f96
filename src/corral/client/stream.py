"""One run's events over Server-Sent Events, whole: resumed by ``seq`` after any drop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import httpx
import orjson

from corral.client.errors import CorralAPIError
from corral.client.sse import SSEParser
from corral.client.transport import RETRY_STATUSES, Http
from corral.client.types import TERMINAL_TYPES, Event, Run


class RunStream:
    """An async iterator of one run's events, in seq order, each once, ending after the
    terminal event: ``async for event in client.stream(run_id): ...``.

    After a dropped connection, a silent one (no byte for ``idle_timeout_s``; the server sends
    a comment every 15 s) or a 502/503/504, it reconnects with backoff and resumes with
    ``Last-Event-ID`` = the last seq it yielded, so it never yields a duplicate and never skips
    a seq. Refusals (404, 422, a 401 the token provider cannot mend) raise
    :class:`CorralAPIError`; so does ``retries`` failures in a row (``network_error``).

    A stream made by :meth:`AsyncClient.start_and_stream` starts its run with
    ``POST /v1/runs/stream`` and an idempotency key: until the run object arrived, a retry
    repeats that request (the server answers it with the same run), later ones resume it.
    ``run`` is the run object once known. Iterate once; ``aclose()`` (or leaving an
    ``async with``) stops it. Cancelling the iterating task cancels the request in flight.
    """

    def __init__(
        self,
        http: Http,
        run_id: str | None,
        after: int = 0,
        *,
        start: tuple[dict[str, Any], str] | None = None,
        idle_timeout_s: float = 45.0,
    ) -> None:
        if run_id is None and start is None:
            raise TypeError("a stream needs a run id, or a run to start")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise TypeError("after is a whole number >= 0")
        self._http = http
        self.run_id = run_id
        self.run: Run | None = None
        self.last_seq = after
        self.reconnects = 0
        self._start = start
        self._idle_timeout_s = idle_timeout_s
        self._events: AsyncGenerator[Event, None] | None = None

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._events is not None:
            raise TypeError("a run stream can be iterated once; call stream() again")
        self._events = self._run()
        return self._events

    async def aclose(self) -> None:
        """Stop: the connection in flight is closed. Idempotent."""
        if self._events is not None:
            await self._events.aclose()

    async def __aenter__(self) -> RunStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _request(self, token: str | None) -> tuple[str, str, dict[str, str], bytes | None]:
        headers = {**self._http.auth.headers(token), "Accept": "text/event-stream"}
        if self.run_id is None:
            assert self._start is not None
            body, key = self._start
            headers["Idempotency-Key"] = key
            headers["Content-Type"] = "application/json"
            return "POST", "/v1/runs/stream", headers, orjson.dumps(body)
        if self.last_seq > 0:
            headers["Last-Event-ID"] = str(self.last_seq)
        return "GET", f"/v1/runs/{self.run_id}/stream", headers, None

    async def _run(self) -> AsyncGenerator[Event, None]:
        http, backoff = self._http, self._http.backoff
        failures = 0
        refreshed = False
        timeout = httpx.Timeout(10.0, read=self._idle_timeout_s)
        while True:
            failure: Exception | None = None
            # Asked on every (re)connect: a long stream may outlive its token.
            token = await (http.auth.fresh() if failures or refreshed else http.auth.current())
            method, path, headers, content = self._request(token)
            try:
                async with http.http.stream(
                    method, path, headers=headers, content=content, timeout=timeout
                ) as response:
                    if response.status_code != 200:
                        body = await response.aread()
                        error = CorralAPIError.from_answer(
                            response.status_code, body, response.headers
                        )
                        if response.status_code == 401 and http.auth.refreshable and not refreshed:
                            refreshed = True
                            continue
                        if response.status_code not in RETRY_STATUSES:
                            raise error
                        failure = error
                    else:
                        refreshed = False
                        async for event in self._read(response):
                            failures = 0
                            yield event
                            if event["type"] in TERMINAL_TYPES:
                                return
                        if await self._ended():
                            return
                        failure = ConnectionError("the stream ended before the run did")
            except httpx.TransportError as exc:
                failure = exc
            failures += 1
            if failures > backoff.retries:
                raise CorralAPIError(
                    None,
                    "network_error",
                    f"the event stream of run {self.run_id or '(starting)'} failed {failures} "
                    f"times in a row ({failure!r}); check that the server is reachable",
                ) from failure
            self.reconnects += 1
            await asyncio.sleep(backoff.delay(failures - 1))

    async def _ended(self) -> bool:
        """Whether a body that ended without a terminal event ended the stream after all: the
        server ends it at once for a finished run resumed at or past its last event."""
        if self.run_id is None:
            return False
        try:
            run = await self._http.request("GET", f"/v1/runs/{self.run_id}", retry=True)
        except CorralAPIError:
            return False
        finished = run.get("status") not in ("queued", "running", "waiting")
        return bool(finished and run.get("last_seq", 0) <= self.last_seq)

    async def _read(self, response: httpx.Response) -> AsyncIterator[Event]:
        """The events of one response that continue the stream; returns at a gap (never sent
        by corral: the caller reconnects from the last seq) or at the body's end."""
        parser = SSEParser()
        async for chunk in response.aiter_bytes():
            for message in parser.feed(chunk):
                try:
                    doc = orjson.loads(message.data)
                except orjson.JSONDecodeError:
                    continue
                if message.event == "run" and isinstance(doc, dict) and "run_id" in doc:
                    self.run = cast(Run, doc)
                    self.run_id = str(doc["run_id"])
                    continue
                seq = doc.get("seq") if isinstance(doc, dict) else None
                if not isinstance(seq, int) or seq <= self.last_seq:
                    continue  # not an event, or one already yielded
                if seq != self.last_seq + 1:
                    return
                self.last_seq = seq
                yield cast(Event, doc)
