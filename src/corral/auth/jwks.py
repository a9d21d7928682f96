"""Keys from a JWKS URL (``CORRAL_JWT_JWKS_URL``): the token's ``kid`` picks the key.

Fetched with httpx on first use, then cached by ``kid``. An unknown ``kid`` (a rotated-in key)
fetches the document again, at most once per ``refetch_interval_s`` (30 s) however many unknown
``kid``\\ s arrive, so a stream of forged tokens cannot turn into a stream of requests to the
identity provider. A document older than ``max_age_s`` is fetched again when a token needs it,
so a key the provider withdrew stops being accepted.

A key set that cannot be fetched (down, timing out, answering garbage) is logged and gives
:class:`~corral.errors.AuthUnavailable` (503) for tokens whose key is not cached: never a
sign-in, and not a 401 either, since the token may be fine. Keys already cached keep working.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx
import jwt
import orjson

from corral.auth.keys import PublicKey
from corral.auth.policy import SUPPORTED_ALGORITHMS, VerifyKey, fits, key_problem
from corral.auth.tokens import TokenHeader
from corral.errors import AuthRefused, AuthUnavailable, ConfigurationError

log = logging.getLogger("corral.auth")

JWKS_SETTING = "CORRAL_JWT_JWKS_URL"
REFETCH_INTERVAL_S = 30.0
MAX_AGE_S = 3600.0
FETCH_TIMEOUT_S = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024  # real key sets are a few KiB; this bounds a bad endpoint
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class Jwk:
    """One usable key of a key set; ``alg`` is the algorithm the set pins it to, if any."""

    kid: str
    key: PublicKey
    alg: str | None


def _one_key(entry: Any) -> Jwk | str:
    """The usable key ``entry`` describes, or why it is skipped."""
    if not isinstance(entry, dict):
        return "an entry is not an object"
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        return "a key has no kid"
    if entry.get("use", "sig") != "sig":
        return f"key {kid!r} is not for signatures"
    if entry.get("kty") == "oct":
        # A symmetric key published at a URL is no secret; accepting one would let anyone
        # sign HS256 tokens with it.
        return f"key {kid!r} is symmetric (kty oct)"
    alg = entry.get("alg")
    if alg is not None and (not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS):
        return f"key {kid!r} is for an algorithm corral does not verify"
    try:
        key = jwt.PyJWK(entry).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
        return f"key {kid!r} cannot be read"
    problem = key_problem(key)
    if problem is not None:
        return f"key {kid!r}: {problem}"
    if not isinstance(key, PublicKey):  # key_problem passes only public RSA and EC keys
        return f"key {kid!r} is not a public key"
    if alg is not None and not fits(alg, key):
        return f"key {kid!r} does not fit its alg {alg}"
    return Jwk(kid=kid, key=key, alg=alg)


def parse_jwks(document: bytes) -> tuple[dict[str, Jwk], list[str]]:
    """The usable keys of a JWKS document by ``kid``, and why the others were skipped.

    Raises :class:`ValueError` saying why when the document is not JSON, not a key set, or
    holds no usable key (a key set with no key is a wrong URL, not a rotation).
    """
    try:
        doc = orjson.loads(document)
    except orjson.JSONDecodeError:
        raise ValueError("the answer is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('the answer is not a JWKS document (no "keys" list)')
    keys: dict[str, Jwk] = {}
    skipped: list[str] = []
    for entry in doc["keys"]:
        parsed = _one_key(entry)
        if isinstance(parsed, str):
            skipped.append(parsed)
        else:
            keys[parsed.kid] = parsed
    if not keys:
        raise ValueError("the document holds no usable signing key: " + "; ".join(skipped[:5]))
    return keys, skipped


def check_jwks_url(url: str) -> httpx.URL:
    """``url`` parsed; :class:`ConfigurationError` unless it is an http(s) URL with a host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(
            f"{JWKS_SETTING} must be an http(s) URL such as "
            "https://idp.example.com/.well-known/jwks.json"
        )
    return parsed


class JwksKeys:
    """The keys of one JWKS URL, cached by ``kid``; see the module docstring for when it fetches.

    Concurrency: callers share one fetch at a time (single flight). A caller cancelled while it
    waits leaves the fetch running for the others; the fetch is bounded by ``timeout_s`` as a
    whole. :meth:`aclose` cancels a running fetch and closes the HTTP client; it is idempotent.
    ``clock`` is monotonic seconds; ``client`` replaces the HTTP client made on first use (it
    is then not closed here).
    """

    def __init__(
        self,
        url: str,
        *,
        refetch_interval_s: float = REFETCH_INTERVAL_S,
        max_age_s: float = MAX_AGE_S,
        timeout_s: float = FETCH_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        parsed = check_jwks_url(url)
        if parsed.scheme == "http" and parsed.host not in LOOPBACK_HOSTS:
            log.warning(
                "%s is plain http: anyone on the path can swap the signing keys; use https",
                JWKS_SETTING,
            )
        self.url = url
        # For log lines: no user-info, no query (either may carry a credential).
        self._shown_url = str(parsed.copy_with(userinfo=b"", query=None))
        self._interval = refetch_interval_s
        self._max_age = max_age_s
        self._timeout = timeout_s
        self._clock = clock
        self._client = client
        self._owns_client = client is None
        self._keys: Mapping[str, Jwk] = MappingProxyType({})
        self._fetched_at: float | None = None  # last success
        self._attempted_at: float | None = None  # last start, success or not
        self._failure: str | None = None  # why the last attempt failed; None after a success
        self._inflight: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def kids(self) -> frozenset[str]:
        """The ``kid``\\ s cached now."""
        return frozenset(self._keys)

    async def key_for(self, header: TokenHeader) -> VerifyKey:
        if self._closed:
            raise AuthUnavailable("the server is shutting down; retry shortly")
        kid = header.kid
        if kid is None:
            raise AuthRefused(
                "unknown_key", "the token names no key (kid); this server picks keys by kid"
            )
        entry = self._keys.get(kid)
        if entry is None or self._stale():
            await self._refresh()
            entry = self._keys.get(kid)
        if entry is None:
            if self._failure is not None or self._fetched_at is None:
                raise AuthUnavailable(
                    "the server cannot fetch its token signing keys now; retry shortly"
                )
            raise AuthRefused(
                "unknown_key", "the token is signed with a key this server does not know"
            )
        if entry.alg is not None and entry.alg != header.alg:
            raise AuthRefused(
                "algorithm", f"the token's algorithm {header.alg} is not the one its key is for"
            )
        return entry.key

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._max_age

    async def _refresh(self) -> None:
        """Start a fetch unless one ran within the interval; wait for the running one."""
        if self._inflight is None:
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._interval:
                return
            self._attempted_at = now
            self._inflight = asyncio.get_running_loop().create_task(
                self._fetch(), name="corral-jwks-fetch"
            )
        # asyncio.wait, not await: cancelling this caller must not cancel the shared fetch.
        await asyncio.wait({self._inflight})

    async def _fetch(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._download()
            keys, skipped = parse_jwks(body)
        except TimeoutError:
            self._failed(f"no answer within {self._timeout:g} s")
        except httpx.HTTPError as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
        except ValueError as exc:
            self._failed(str(exc))
        except Exception as exc:  # a fetch must never take the authenticator down with it
            log.exception("fetching the signing keys failed unexpectedly")
            self._failed(f"unexpected {type(exc).__name__}")
        else:
            self._keys = MappingProxyType(keys)
            self._fetched_at = self._clock()
            self._failure = None
            log.info("fetched %d signing key(s) from %s", len(keys), self._shown_url)
            if skipped:
                log.warning("skipped keys of %s: %s", self._shown_url, "; ".join(skipped[:10]))
        finally:
            self._inflight = None

    async def _download(self) -> bytes:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        headers = {"Accept": "application/jwk-set+json, application/json"}
        async with self._client.stream("GET", self.url, headers=headers) as response:
            if response.status_code != 200:
                raise ValueError(f"the answer is HTTP {response.status_code}, not 200")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError(f"the answer is larger than {MAX_DOCUMENT_BYTES} bytes")
        return bytes(body)

    def _failed(self, reason: str) -> None:
        self._failure = reason
        log.warning(
            "cannot fetch the signing keys from %s (%s): tokens whose key is not cached get "
            "503 until a fetch succeeds; the next try comes with a token that needs it, "
            "%g s from now at the earliest",
            self._shown_url,
            reason,
            self._interval,
        )

    async def aclose(self) -> None:
        self._closed = True
        task, self._inflight = self._inflight, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        if self._client is not None and self._owns_client:
            client, self._client = self._client, None
            await client.aclose()
