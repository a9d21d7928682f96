"""``ChatModel``: streaming chat completions from one OpenAI-compatible endpoint, with retries.

One :class:`ChatModel` per registration holds the app's connection pool (an
:class:`httpx.AsyncClient`) while an app serves the registry, and nothing about any user: every
request carries its whole conversation, built per run by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from typing import Any

import httpx

from corral.core.tracing import NO_SPAN, NO_TRACER, Span, Tracer
from corral.llm.config import LLMSettings
from corral.llm.errors import (
    LLMError,
    LLMLimitExceeded,
    LLMProtocolError,
    LLMRateLimited,
    LLMRequestRejected,
    LLMServerError,
    LLMUnavailable,
)
from corral.llm.stream import Completion, CompletionBuilder, SSEDecoder

log = logging.getLogger("corral.llm")

_ERROR_BODY_BYTES = 4096
_MAX_LINE_CHARS = 1 << 20

TextCallback = Callable[[str], Awaitable[None]]
RetryCallback = Callable[[LLMError, float, int], Awaitable[None]]
"""Called before each retry with the error, the wait in seconds, and the retry number (1...)."""


class ChatModel:
    """Chat completions from the endpoint in ``settings``.

    ``async with model.open():`` holds one connection pool for as long as an app runs (the
    registry's lifespan); opening it again while open shares the pool, and it closes when the
    last opener leaves. Outside any ``open()`` each request uses a short-lived client of its own,
    so plain-Python use works too. :meth:`complete` is safe to call from many tasks at once.
    """

    def __init__(
        self, settings: LLMSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if settings.base_url is None or settings.model is None:
            raise LLMRequestRejected(
                "no model is configured: set CORRAL_LLM_BASE_URL and CORRAL_LLM_MODEL"
            )
        self.settings = settings
        self.url = settings.completions_url
        self.display_url = settings.display_url
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._openers = 0

    def _new_client(self) -> httpx.AsyncClient:
        s = self.settings
        headers = {"Accept": "text/event-stream"}
        if s.api_key is not None:
            headers["Authorization"] = f"Bearer {s.api_key.get_secret_value()}"
        return httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(s.read_timeout_s, connect=s.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=s.max_connections, max_keepalive_connections=s.max_connections
            ),
            transport=self._transport,
            follow_redirects=False,
        )

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[ChatModel]:
        """Hold the connection pool open (reference-counted); closes it on the last exit."""
        if self._client is None:
            self._client = self._new_client()
        self._openers += 1
        try:
            yield self
        finally:
            self._openers -= 1
            if self._openers == 0 and self._client is not None:
                client, self._client = self._client, None
                await client.aclose()

    @contextlib.asynccontextmanager
    async def _borrow(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._client is not None:
            yield self._client
            return
        async with self._new_client() as client:
            yield client

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        on_text: TextCallback,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        max_tokens: int | None = None,
        deadline: float | None = None,
        on_retry: RetryCallback | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> Completion:
        """Stream one response: ``await on_text(text)`` for each piece of text as it arrives.

        Returns the whole :class:`Completion` (text, tool calls, finish reason, tokens). A
        response that stops with ``max_tokens`` generated — as the server counts them, or by
        chunks when it does not stop — ends with ``finish_reason`` ``"length"``.

        Retries: a refused or timed-out connection, 429 (after its ``Retry-After``) and 5xx are
        retried ``settings.retries`` times with exponential backoff — but only while no text has
        gone to ``on_text``, since text already delivered cannot be taken back. ``deadline``
        (``loop.time()``) bounds the whole call, waits included: past it,
        :class:`LLMLimitExceeded`. Cancellation closes the HTTP response at once and propagates.

        With a ``tracer`` (a run's: ``ctx.tracer``) the call is a ``corral.llm`` span — the
        model, the server, retries, the finish reason and token count, never the messages or
        the answer; an error that ends the call marks it failed — and the request carries its
        ``traceparent`` to the model server.
        """
        span_context = (
            tracer.span(
                "corral.llm",
                {
                    "gen_ai.request.model": self.settings.model or "",
                    "server.address": self.display_url,
                },
                kind="client",
            )
            if tracer.enabled
            else NO_SPAN
        )
        with span_context as span:
            completion = await self._complete(
                messages, on_text, tools, tool_choice, max_tokens, deadline, on_retry, tracer, span
            )
            span.set_attribute("gen_ai.response.finish_reasons", completion.finish_reason or "")
            span.set_attribute("gen_ai.usage.output_tokens", completion.tokens)
            return completion

    async def _complete(
        self,
        messages: list[dict[str, Any]],
        on_text: TextCallback,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any] | None,
        max_tokens: int | None,
        deadline: float | None,
        on_retry: RetryCallback | None,
        tracer: Tracer,
        span: Span,
    ) -> Completion:
        body = self._body(messages, tools, tool_choice, max_tokens)
        traceparent = tracer.traceparent()
        headers = {"traceparent": traceparent} if traceparent is not None else None
        loop = asyncio.get_running_loop()
        delivered = False

        async def deliver(text: str) -> None:
            nonlocal delivered
            delivered = True
            await on_text(text)

        retries = 0
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._attempt(body, deliver, max_tokens, headers)
            except TimeoutError:
                raise LLMLimitExceeded(
                    f"the model at {self.display_url} did not finish within the run's model "
                    "time limit"
                ) from None
            except LLMError as exc:
                if not exc.retryable or delivered or retries >= self.settings.retries:
                    raise
                wait = self._wait_before_retry(exc, retries)
                if deadline is not None and loop.time() + wait >= deadline:
                    raise
                retries += 1
                span.set_attribute("corral.llm.retries", retries)
                log.warning(
                    "model request failed (%s); retry %d of %d in %.2f s",
                    type(exc).__name__,
                    retries,
                    self.settings.retries,
                    wait,
                )
                if on_retry is not None:
                    await on_retry(exc, wait, retries)
                await asyncio.sleep(wait)

    def _body(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any] | None,
        max_tokens: int | None,
    ) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "model": s.model,
            "messages": messages,
            "stream": True,
            "max_tokens": max_tokens or s.max_tokens,
        }
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if tools:
            body["tools"] = tools
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        return body

    def _wait_before_retry(self, exc: LLMError, retries: int) -> float:
        s = self.settings
        if isinstance(exc, LLMRateLimited) and exc.retry_after is not None:
            if exc.retry_after > s.retry_max_wait_s:
                raise LLMRateLimited(
                    f"{exc.message}; it asked to wait {exc.retry_after:g} s, longer than "
                    f"CORRAL_LLM_RETRY_MAX_WAIT_S={s.retry_max_wait_s:g}",
                    retry_after=exc.retry_after,
                ) from None
            return exc.retry_after
        backoff = min(s.retry_max_wait_s, s.retry_backoff_s * 2.0**retries)
        return backoff * random.uniform(0.5, 1.0)  # jitter: retries of many runs spread out

    async def _attempt(
        self,
        body: dict[str, Any],
        on_text: TextCallback,
        max_tokens: int | None,
        headers: dict[str, str] | None = None,
    ) -> Completion:
        limit = max_tokens or self.settings.max_tokens
        try:
            async with (
                self._borrow() as client,
                client.stream("POST", self.url, json=body, headers=headers) as response,
            ):
                if response.status_code != 200:
                    raise await self._status_error(response)
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" not in content_type:
                    raise LLMProtocolError(
                        f"the model server at {self.display_url} answered with "
                        f"{content_type or 'no content type'} instead of an event stream; "
                        "does it support streaming chat completions (stream=true)?"
                    )
                return await self._read_stream(response, on_text, limit)
        except LLMError:
            raise
        except httpx.ConnectTimeout:
            raise LLMUnavailable(
                f"the model server at {self.display_url} did not accept a connection within "
                f"{self.settings.connect_timeout_s:g} s; is it running and reachable?"
            ) from None
        except httpx.ConnectError as exc:
            raise LLMUnavailable(self._connect_message(exc)) from None
        except httpx.ReadTimeout:
            raise LLMUnavailable(
                f"the model server at {self.display_url} sent nothing for "
                f"{self.settings.read_timeout_s:g} s (CORRAL_LLM_READ_TIMEOUT_S); is it "
                "overloaded?"
            ) from None
        except httpx.PoolTimeout:
            raise LLMUnavailable(
                f"all {self.settings.max_connections} connections to the model server are busy "
                "(CORRAL_LLM_MAX_CONNECTIONS)"
            ) from None
        except httpx.RemoteProtocolError:
            raise LLMServerError(
                f"the model server at {self.display_url} closed the connection in the middle "
                "of a response; check its logs"
            ) from None
        except httpx.TransportError as exc:
            raise LLMUnavailable(
                f"the connection to the model server at {self.display_url} failed "
                f"({type(exc).__name__}); is it running and reachable?"
            ) from None

    async def _read_stream(
        self, response: httpx.Response, on_text: TextCallback, limit: int
    ) -> Completion:
        decoder = SSEDecoder()
        builder = CompletionBuilder()
        try:
            async for line in response.aiter_lines():
                if len(line) > _MAX_LINE_CHARS:
                    raise LLMProtocolError(f"a stream line is longer than {_MAX_LINE_CHARS} chars")
                data = decoder.feed(line)
                if data is None:
                    continue
                text = builder.feed(data)
                if text:
                    await on_text(text)
                if builder.done:
                    break
                if builder.tokens >= limit and builder.finish_reason is None:
                    # A server that ignores max_tokens: stop reading, as if it had stopped.
                    return _stopped(builder.result(), "length")
            else:
                tail = decoder.flush()
                if tail is not None:
                    text = builder.feed(tail)
                    if text:
                        await on_text(text)
        except (LLMProtocolError, LLMServerError) as exc:
            raise type(exc)(
                f"the model server at {self.display_url} sent a broken stream: {exc.message}"
            ) from None
        if builder.finish_reason is None:
            # [DONE] or the end of the body without a finish_reason: cut short. (llama_cpp.server
            # does this to a stream when another request arrives, unless told not to.)
            raise LLMProtocolError(
                f"the stream from the model server at {self.display_url} ended without a "
                "finish_reason: the response was cut short. Check the server's logs; a "
                "llama_cpp.server must run with --interrupt_requests false to serve requests "
                "that overlap"
            )
        try:
            return builder.result()
        except LLMProtocolError as exc:
            raise LLMProtocolError(
                f"the model server at {self.display_url} sent a broken stream: {exc.message}"
            ) from None

    async def _status_error(self, response: httpx.Response) -> LLMError:
        code = response.status_code
        detail = self._scrub(await _error_detail(response))
        said = f": {detail}" if detail else ""
        where = f"the model server at {self.display_url}"
        if code == 429:
            return LLMRateLimited(
                f"{where} is limiting requests (HTTP 429{said}); wait, lower the load, or raise "
                "your quota",
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        if code >= 500:
            return LLMServerError(
                f"{where} failed (HTTP {code}{said}); check its logs", status_code=code
            )
        if code in (401, 403):
            return LLMRequestRejected(
                f"{where} refused the credentials (HTTP {code}{said}); check CORRAL_LLM_API_KEY",
                status_code=code,
            )
        if code == 404:
            return LLMRequestRejected(
                f"{where} has no /chat/completions or no model {self.settings.model!r} "
                f"(HTTP 404{said}); check CORRAL_LLM_BASE_URL (usually ending in /v1) and "
                "CORRAL_LLM_MODEL",
                status_code=code,
            )
        return LLMRequestRejected(
            f"{where} rejected the request (HTTP {code}{said}); check CORRAL_LLM_MODEL and the "
            "server's support for streaming and tools",
            status_code=code,
        )

    def _connect_message(self, exc: httpx.ConnectError) -> str:
        reason = str(exc) or type(exc).__name__
        if "refused" in reason.lower() or "all connection attempts failed" in reason.lower():
            return (
                f"the model server at {self.display_url} refused the connection; is it running "
                "and listening there (CORRAL_LLM_BASE_URL)?"
            )
        return (
            f"the model server at {self.display_url} could not be reached ({reason[:200]}); "
            "check CORRAL_LLM_BASE_URL and the network"
        )

    def _scrub(self, text: str) -> str:
        key = self.settings.api_key
        if key is not None and key.get_secret_value():
            text = text.replace(key.get_secret_value(), "[REDACTED]")
        return text


def _stopped(completion: Completion, reason: str) -> Completion:
    completion.finish_reason = reason
    return completion


async def _error_detail(response: httpx.Response) -> str:
    """The server's own error message, from at most a few KiB of its body."""
    raw = b""
    async for part in response.aiter_bytes():
        raw += part
        if len(raw) >= _ERROR_BODY_BYTES:
            break
    text = raw[:_ERROR_BODY_BYTES].decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300]
    if isinstance(doc, dict):
        error = doc.get("error", doc.get("detail", doc))
        if isinstance(error, dict):
            error = error.get("message", error)
        return " ".join(str(error).split())[:300]
    return " ".join(text.split())[:300]


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())
