"""What a front door hands an authenticator: :class:`AuthRequest`, and the protocol it answers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol, get_args

from corral.auth.identity import Identity
from corral.errors import ContextError

Transport = Literal["http", "sse", "ws"]
TRANSPORTS: tuple[str, ...] = get_args(Transport)

Pairs = Mapping[str, str] | Iterable[tuple[str, str]]


class MultiMap(Mapping[str, str]):
    """A read-only mapping of names to their first value, with :meth:`getlist` for all of them.

    Built once from a mapping or from ``(name, value)`` pairs (a header or a query parameter
    may repeat); nothing can change it afterwards.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Pairs = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        collected: dict[str, list[str]] = {}
        for name, value in pairs:
            if not isinstance(name, str) or not isinstance(value, str):
                raise ContextError(type(self).__name__.lower(), "names and values must be str")
            collected.setdefault(self._key(name), []).append(value)
        self._items: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {k: tuple(v) for k, v in collected.items()}
        )

    @staticmethod
    def _key(name: str) -> str:
        return name

    def __getitem__(self, name: str) -> str:
        return self._items[self._key(name)][0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def getlist(self, name: str) -> list[str]:
        """Every value given for ``name``, in order (empty when there is none)."""
        return list(self._items.get(self._key(name), ()))

    def __repr__(self) -> str:
        # Names only: values are credentials often enough (Authorization, Cookie).
        return f"{type(self).__name__}({sorted(self._items)})"


class Headers(MultiMap):
    """Request headers: case-insensitive names (``headers["authorization"]``), read-only."""

    __slots__ = ()

    @staticmethod
    def _key(name: str) -> str:
        return name.lower()


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _multimap(value: object, kind: type[MultiMap], name: str) -> MultiMap:
    if isinstance(value, kind):
        return value
    if isinstance(value, Mapping | list | tuple):
        return kind(value)
    raise ContextError(name, f"expected a mapping or (name, value) pairs, got {type(value)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRequest:
    """One attempt to sign in at a front door, as an authenticator sees it. Immutable.

    ``headers`` is case-insensitive; ``headers``, ``cookies`` and ``query`` are read-only
    (:class:`MultiMap`: a mapping to the first value, ``getlist`` for all) and may be given as
    plain mappings or lists of ``(name, value)`` pairs, which are converted. ``token`` is the
    bearer token of the ``Authorization`` header, or of the WebSocket ``auth`` message; the
    front door fills it (it defaults to the header's bearer token when not given).
    """

    transport: Transport
    headers: Headers = field(default_factory=Headers)
    cookies: MultiMap = field(default_factory=MultiMap)
    query: MultiMap = field(default_factory=MultiMap)
    client_host: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ContextError("transport", f"expected one of {', '.join(TRANSPORTS)}")
        object.__setattr__(self, "headers", _multimap(self.headers, Headers, "headers"))
        object.__setattr__(self, "cookies", _multimap(self.cookies, MultiMap, "cookies"))
        object.__setattr__(self, "query", _multimap(self.query, MultiMap, "query"))
        if self.client_host is not None and not isinstance(self.client_host, str):
            raise ContextError("client_host", "expected a string or None")
        if self.token is None:
            object.__setattr__(self, "token", bearer(self.headers.get("authorization")))
        elif not isinstance(self.token, str):
            raise ContextError("token", "expected a string or None")

    def __repr__(self) -> str:
        # Never the token or header values: a request object ends up in log lines.
        return (
            f"AuthRequest(transport={self.transport!r}, client_host={self.client_host!r}, "
            f"token={'<set>' if self.token else None}, headers={self.headers!r})"
        )


class Authenticator(Protocol):
    """Decides who an :class:`AuthRequest` is for; made by :func:`corral.auth.authenticator_from`.

    :meth:`authenticate` answers an :class:`Identity`, or None for "not signed in" (401), or
    raises :class:`~corral.errors.AuthRefused` for a credential it refuses (401 with the
    reason) or :class:`~corral.errors.AuthUnavailable` when it cannot decide now (503). It is
    safe to call concurrently; cancelling a call leaves the authenticator usable. ``aclose``
    releases what it holds (idempotent); afterwards :meth:`authenticate` must not be called.
    """

    async def authenticate(self, request: AuthRequest) -> Identity | None: ...

    async def aclose(self) -> None: ...
