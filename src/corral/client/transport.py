"""How the client talks HTTP: the token, retries with backoff, and errors as CorralAPIError."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from corral.client.errors import CorralAPIError
from corral.client.types import TokenProvider

RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: between half and all of ``min_s * 2**attempt``,
    capped at ``max_s``; ``retries`` attempts after the first."""

    min_s: float = 0.1
    max_s: float = 5.0
    retries: int = 6

    def delay(self, attempt: int) -> float:
        cap: float = min(self.max_s, self.min_s * 2.0 ** min(attempt, 30))
        return cap / 2 + random.random() * cap / 2


class Auth:
    """The bearer token: a fixed one, or one asked from ``provider`` — on first use, on every
    (re)connect of a stream or socket, and after a refusal (401, or a socket closed 1008).

    Concurrent callers share one ask: a refresh already in flight is awaited, not repeated.
    """

    def __init__(self, token: str | None, provider: TokenProvider | None) -> None:
        if token is not None and provider is not None:
            raise TypeError("pass token or token_provider, not both")
        if token is not None and (not isinstance(token, str) or not token):
            raise TypeError("token must be a non-empty string")
        if provider is not None and not callable(provider):
            raise TypeError("token_provider must be an async callable returning a token")
        self._token = token
        self._provider = provider
        self._lock = asyncio.Lock()
        self._generation = 0

    @property
    def refreshable(self) -> bool:
        return self._provider is not None

    async def current(self) -> str | None:
        """The token to send now (asking the provider only if there is none yet)."""
        if self._token is None and self._provider is not None:
            await self.fresh()
        return self._token

    async def fresh(self) -> str | None:
        """A token from the provider now (the fixed token when there is no provider)."""
        if self._provider is None:
            return self._token
        seen = self._generation
        async with self._lock:
            if self._generation != seen and self._token is not None:
                return self._token  # another task refreshed while this one waited
            try:
                token = await self._provider()
            except Exception as exc:
                raise CorralAPIError(
                    None, "unauthorized", f"token_provider failed: {exc!r}"
                ) from exc
            if not isinstance(token, str) or not token:
                raise CorralAPIError(
                    None, "unauthorized", "token_provider returned no token (a non-empty str)"
                )
            self._token = token
            self._generation += 1
            return token

    def headers(self, token: str | None) -> dict[str, str]:
        return {} if token is None else {"Authorization": f"Bearer {token}"}


class Http:
    """JSON requests to one server as one user. Safe from any task, concurrently.

    A request marked ``retry`` (reads, deletes, and starts carrying an idempotency key) is
    retried after a dropped connection or a 502/503/504; any request is retried when it could
    not connect at all (nothing was sent). A 401 asks the token provider once more.
    """

    def __init__(
        self, http: httpx.AsyncClient, auth: Auth, backoff: Backoff, is_closed: Callable[[], bool]
    ) -> None:
        self.http = http
        self.auth = auth
        self.backoff = backoff
        self._is_closed = is_closed

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = False,
        replayed: Callable[[], Awaitable[Any]] | None = None,
    ) -> Any:
        """The decoded JSON answer (None for an empty one) or :class:`CorralAPIError`.

        ``replayed``: what a 409 means after an attempt that may have been applied (its answer
        was lost) — the caller's way to fetch the result that attempt had.
        """
        content = None if json is None else orjson.dumps(json)
        uncertain = False
        refreshed = False
        attempt = 0
        while True:
            if self._is_closed():
                raise CorralAPIError(None, "closed", "the client was closed")
            token = await self.auth.current()
            sent = {**self.auth.headers(token), **(headers or {})}
            if content is not None:
                sent["Content-Type"] = "application/json"
            try:
                response = await self.http.request(
                    method, path, content=content, params=params, headers=sent
                )
            except httpx.TransportError as exc:
                connect = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if not (retry or connect) or attempt >= self.backoff.retries:
                    raise CorralAPIError(
                        None,
                        "network_error",
                        f"{method} {path} failed ({exc!r}); check that the server is reachable",
                    ) from exc
                uncertain = uncertain or not connect
                await asyncio.sleep(self.backoff.delay(attempt))
                attempt += 1
                continue
            if response.is_success:
                return orjson.loads(response.content) if response.content else None
            error = CorralAPIError.from_answer(
                response.status_code, response.content, response.headers
            )
            if response.status_code == 401 and self.auth.refreshable and not refreshed:
                refreshed = True
                await self.auth.fresh()
                continue
            if response.status_code == 409 and uncertain and replayed is not None:
                return await replayed()
            if retry and response.status_code in RETRY_STATUSES and attempt < self.backoff.retries:
                wait = error.retry_after or self.backoff.delay(attempt)
                await asyncio.sleep(min(wait, self.backoff.max_s))
                attempt += 1
                continue
            raise error
