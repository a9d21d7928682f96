"""A run in the AG-UI protocol (``POST /v1/ag-ui/{agent}``), resumed after any drop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import orjson

from corral.client.errors import CorralAPIError
from corral.client.sse import SSEParser
from corral.client.transport import RETRY_STATUSES, Http

AGUI_TERMINAL = frozenset({"RUN_FINISHED", "RUN_ERROR"})


class AguiStream:
    """An async iterator of AG-UI events (JSON objects) of one run, each once, ending after
    ``RUN_FINISHED`` or ``RUN_ERROR``: ``async for event in client.ag_ui("research", body)``.

    Until ``RUN_STARTED`` (which names corral's run in ``metadata.corral.run_id``) has arrived, a
    retry repeats the request with its idempotency key — the server answers it with the same
    run; after, it resumes with ``GET /v1/runs/{run_id}/stream?format=ag-ui`` and
    ``Last-Event-ID``. Events the resumed stream sends again (those of a corral event whose
    AG-UI events were cut apart) are skipped by count, so none is yielded twice, and events of a
    resumed stream keep the ``runId`` and ``threadId`` of the request's ``RUN_STARTED`` (the
    resumable encoding names the run by corral's id). ``run_id`` is corral's run id once known.
    Iterate once.
    """

    def __init__(
        self, http: Http, agent: str, body: dict[str, Any], key: str | None = None
    ) -> None:
        self._http = http
        self._agent = agent
        self._body = body
        self._key = key or f"py-{uuid.uuid4().hex}"
        self.run_id: str | None = None
        self.last_id = 0  # the id of the last corral event whose AG-UI events were all yielded
        self.reconnects = 0
        self._since_id = 0  # AG-UI events yielded after the last id
        self._names: dict[str, Any] = {}  # the runId and threadId RUN_STARTED gave
        self._events: AsyncGenerator[dict[str, Any], None] | None = None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        if self._events is not None:
            raise TypeError("an AG-UI stream can be iterated once")
        self._events = self._run()
        return self._events

    async def aclose(self) -> None:
        if self._events is not None:
            await self._events.aclose()

    def _request(self, token: str | None) -> tuple[str, str, dict[str, str], bytes | None]:
        headers = {**self._http.auth.headers(token), "Accept": "text/event-stream"}
        if self.run_id is None:
            headers["Idempotency-Key"] = self._key
            headers["Content-Type"] = "application/json"
            return "POST", f"/v1/ag-ui/{self._agent}", headers, orjson.dumps(self._body)
        if self.last_id > 0:
            headers["Last-Event-ID"] = str(self.last_id)
        return "GET", f"/v1/runs/{self.run_id}/stream?format=ag-ui", headers, None

    async def _run(self) -> AsyncGenerator[dict[str, Any], None]:
        http, backoff = self._http, self._http.backoff
        failures = 0
        timeout = httpx.Timeout(10.0, read=45.0)  # the server sends a comment every 15 s
        while True:
            token = await (http.auth.fresh() if failures else http.auth.current())
            method, path, headers, content = self._request(token)
            failure: Exception
            try:
                async with http.http.stream(
                    method,
                    path,
                    headers=headers,
                    content=content,
                    timeout=timeout,
                ) as response:
                    if response.status_code != 200:
                        error = CorralAPIError.from_answer(
                            response.status_code, await response.aread(), response.headers
                        )
                        if response.status_code not in RETRY_STATUSES:
                            raise error
                        failure = error
                    else:
                        async for event in self._read(response):
                            failures = 0
                            yield event
                            if event.get("type") in AGUI_TERMINAL:
                                return
                        failure = ConnectionError("the stream ended before the run did")
            except httpx.TransportError as exc:
                failure = exc
            failures += 1
            if failures > backoff.retries:
                raise CorralAPIError(
                    None, "network_error", f"the AG-UI stream failed {failures} times ({failure!r})"
                ) from failure
            self.reconnects += 1
            await asyncio.sleep(backoff.delay(failures - 1))

    async def _read(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        """The AG-UI events of one response not yielded yet. A resumed stream starts at the
        first AG-UI event of the corral event after ``last_id``: the ``_since_id`` events of it
        that were yielded before the cut come again, and are skipped."""
        parser = SSEParser()
        resumed = self.run_id is not None
        skip = self._since_id if resumed else 0
        async for chunk in response.aiter_bytes():
            for message in parser.feed(chunk):
                event = orjson.loads(message.data)
                if self.run_id is None and event.get("type") == "RUN_STARTED":
                    corral = (event.get("metadata") or {}).get("corral") or {}
                    self.run_id = corral.get("run_id")
                    self._names = {k: event[k] for k in ("runId", "threadId") if k in event}
                elif resumed:
                    event.update({k: v for k, v in self._names.items() if k in event})
                if skip:
                    skip -= 1
                else:
                    self._since_id += 1
                    yield event
                if message.own_id and message.id is not None and message.id.isdigit():
                    self.last_id = int(message.id)
                    self._since_id = 0
