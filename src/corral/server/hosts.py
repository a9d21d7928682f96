"""Who a request is addressed to: ``Host``, ``Origin`` and the metrics token (contract §3, §5).

A page on a DNS-rebinding domain (``evil.example`` resolving to 127.0.0.1) reaches a loopback
server with its own name in ``Host`` and ``Origin``, and the browser lets it read the answers.
So: with ``CORRAL_ALLOWED_HOSTS`` every request must name one of the server's names; development
tokens go only to requests addressed to a loopback name; a browser's WebSocket must come from
a page of the server's own names; ``CORRAL_METRICS_TOKEN`` guards ``/metrics``.

:class:`HostGuard` is plain ASGI middleware for HTTP and WebSocket alike; it keeps no state
between requests, so any number of them run concurrently.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.errors import ConfigurationError
from corral.server.auth import bearer
from corral.server.errors import ErrorAnswer, error_answer
from corral.settings import Settings

DEV_TOKEN_PATH = "/v1/dev/token"
METRICS_PATH = "/metrics"
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class HostName:
    """A host name, lower-case, IPv6 literals without brackets, and a port when one is given."""

    name: str
    port: int | None = None

    def matches(self, other: HostName) -> bool:
        return self.name == other.name and (self.port is None or self.port == other.port)


def parse_host(value: str) -> HostName | None:
    """``example.com``, ``example.com:8000``, ``[::1]:8000`` → a :class:`HostName`; None if
    it is not a host (a URL, a path, a bad port)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, sep, port_text = value.rpartition(":")
        if not sep:
            name, port_text = value, None
        elif ":" in name:
            return None  # an IPv6 literal must be in brackets to carry a port
    name = name.rstrip(".")  # "localhost." is localhost
    if not name or any(c in name for c in "/@?#\\ \t"):
        return None
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    return HostName(name, port)


def is_loopback_name(host: HostName | None) -> bool:
    """``localhost`` or a loopback IP literal (``127.0.0.1``, ``[::1]``), any port."""
    if host is None:
        return False
    if host.name == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The server's names and the rules on them, read once from settings."""

    allowed: tuple[HostName, ...]  # CORRAL_ALLOWED_HOSTS
    any_host: bool  # no CORRAL_ALLOWED_HOSTS (or "*"): any Host is answered
    loopback: bool  # bound to a loopback address
    bound: HostName | None  # the bound name when it is neither loopback nor a wildcard
    allowed_origins: frozenset[str]
    dev_tokens: bool
    metrics_token: bytes | None

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        """The policy of ``settings``; :class:`ConfigurationError` for a malformed host."""
        allowed = tuple(_allowed_host(entry) for entry in settings.allowed_hosts if entry != "*")
        bound = None
        if not settings.is_loopback and settings.host not in WILDCARD_BINDS:
            bound = parse_host(settings.host) or parse_host(f"[{settings.host}]")
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
        return cls(
            allowed=allowed,
            any_host=not allowed or "*" in settings.allowed_hosts,
            loopback=settings.is_loopback,
            bound=bound,
            allowed_origins=frozenset(settings.allowed_origins),
            dev_tokens=settings.dev_tokens_enabled,
            metrics_token=token.encode() or None,
        )

    def host_allowed(self, host: HostName | None) -> bool:
        """Whether ``CORRAL_ALLOWED_HOSTS`` (when set) names this ``Host``."""
        if self.any_host:
            return True
        return host is not None and any(rule.matches(host) for rule in self.allowed)

    def is_own_name(self, host: HostName) -> bool:
        """A name a page of this server is served under: one of ``CORRAL_ALLOWED_HOSTS``;
        without them a loopback name on a loopback server, else the bound host name. A
        wildcard bind without them names nothing, so any name is taken as the server's."""
        if not self.any_host:
            return self.host_allowed(host)
        if self.loopback:
            return is_loopback_name(host)
        if self.bound is not None:
            return host.name == self.bound.name
        return True

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """May a browser page at ``origin`` open a WebSocket whose request names ``host``?

        No ``Origin`` (not a browser), an origin in ``CORRAL_ALLOWED_ORIGINS``, or the same
        origin as the request under one of the server's own names. Same-origin alone is not
        enough: a DNS-rebinding page is the same origin as its requests, under its own name.
        """
        if origin is None:
            return True
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        netloc = urlsplit(origin).netloc.lower()
        if not netloc or host is None or netloc != host.strip().lower():
            return False
        named = parse_host(netloc)
        return named is not None and self.is_own_name(named)


def _allowed_host(entry: str) -> HostName:
    host = parse_host(entry)
    if host is None:
        raise ConfigurationError(
            f"CORRAL_ALLOWED_HOSTS entry {entry!r} is not a host name: write names like "
            "'corral.example.com' or 'corral.example.com:8443', comma-separated, no scheme"
        )
    return host


def request_host(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The single ``Host`` header's value; None when there is none or more than one."""
    values = [value for name, value in headers if name == b"host"]
    if len(values) != 1:
        return None
    return values[0].decode("latin-1")


class HostGuard:
    """ASGI middleware: refuses requests addressed to a name that is not the server's.

    HTTP refusals are the contract's error bodies (403 ``forbidden``, 401 ``unauthorized``);
    a refused WebSocket upgrade is closed before it is accepted, which the server answers 403.
    """

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._check_http(scope)
            if refusal is not None:
                await _send_error(send, refusal)
                return
        elif scope["type"] == "websocket" and not self._websocket_allowed(scope):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)

    def _check_http(self, scope: Scope) -> ErrorAnswer | None:
        policy = self.policy
        host_value = request_host(scope["headers"])
        host = parse_host(host_value) if host_value is not None else None
        if not policy.host_allowed(host):
            return error_answer(
                "forbidden",
                "this server does not answer to that Host: address it by one of its names "
                "(CORRAL_ALLOWED_HOSTS)",
            )
        path = _route_path(scope)
        if path == DEV_TOKEN_PATH and policy.dev_tokens and not is_loopback_name(host):
            return error_answer(
                "forbidden",
                "dev tokens are given only to requests addressed to a loopback name: "
                "open the page at http://127.0.0.1:<port>/ or http://localhost:<port>/",
            )
        if path == METRICS_PATH and policy.metrics_token is not None:
            token = bearer(_header(scope, b"authorization"))
            given = token.encode() if token is not None else b""
            if not hmac.compare_digest(given, policy.metrics_token):
                return error_answer(
                    "unauthorized",
                    "/metrics needs 'Authorization: Bearer <CORRAL_METRICS_TOKEN>'",
                    {"WWW-Authenticate": "Bearer"},
                )
        return None

    def _websocket_allowed(self, scope: Scope) -> bool:
        host_value = request_host(scope["headers"])
        host = parse_host(host_value) if host_value is not None else None
        if not self.policy.host_allowed(host):
            return False
        return self.policy.origin_allowed(_header(scope, b"origin"), host_value)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route_path(scope: Scope) -> str:
    """The path below the app's mount point (``root_path``), as Starlette routes it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


async def _send_error(send: Send, error: ErrorAnswer) -> None:
    body = orjson.dumps(error.body())
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
