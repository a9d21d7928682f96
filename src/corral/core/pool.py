"""The user → connections map of one process, owner-checked on every operation."""

from __future__ import annotations

import logging

from corral.core.connection import Connection
from corral.errors import CorralError, OwnershipError

log = logging.getLogger("corral.pool")


class ConnectionLimitError(CorralError):
    """The user already holds the maximum number of connections."""

    def __init__(self, user_id: str, limit: int) -> None:
        self.user_id = user_id
        self.limit = limit
        super().__init__(
            f"you already have {limit} open connections; close one before opening another"
        )


class WebSocketConnectionPool:
    """Which connections each user holds on this process.

    ``add``/``remove``/``connections`` all name the user, and a connection is accepted only
    for the user it was made for. WebSocket connections (``kind == "ws"``) count toward
    ``max_per_user``; run-filtered streams (SSE) do not. Users with no connection are
    forgotten, so memory follows the connections that are open, not those that ever were.
    """

    def __init__(self, max_per_user: int = 10) -> None:
        self.max_per_user = max_per_user
        self._by_user: dict[str, set[Connection]] = {}

    def add(self, user_id: str, connection: Connection) -> bool:
        """Add ``connection`` for ``user_id``; True if it is the user's first on this process.

        Raises :class:`OwnershipError` when the connection belongs to another user and
        :class:`ConnectionLimitError` when the user is at the limit.
        """
        self._check_owner(user_id, connection, "add")
        conns = self._by_user.get(user_id)
        if connection.kind == "ws":
            held = sum(1 for c in conns or () if c.kind == "ws")
            if held >= self.max_per_user:
                raise ConnectionLimitError(user_id, self.max_per_user)
        if conns is None:
            self._by_user[user_id] = {connection}
            return True
        conns.add(connection)
        return False

    def remove(self, user_id: str, connection: Connection) -> bool:
        """Remove it; True if the user has no connection left here. Idempotent."""
        self._check_owner(user_id, connection, "remove")
        conns = self._by_user.get(user_id)
        if conns is None:
            return False
        conns.discard(connection)
        if not conns:
            del self._by_user[user_id]
            return True
        return False

    def connections(self, user_id: str) -> tuple[Connection, ...]:
        """A snapshot of ``user_id``'s connections (safe to iterate while others change)."""
        conns = self._by_user.get(user_id)
        return tuple(conns) if conns else ()

    def has_user(self, user_id: str) -> bool:
        return user_id in self._by_user

    def user_count(self) -> int:
        return len(self._by_user)

    def connection_count(self, kind: str | None = None) -> int:
        return sum(
            1 for conns in self._by_user.values() for c in conns if kind is None or c.kind == kind
        )

    def all_connections(self) -> list[Connection]:
        return [c for conns in self._by_user.values() for c in conns]

    @staticmethod
    def _check_owner(user_id: str, connection: Connection, op: str) -> None:
        if connection.user_id != user_id:
            log.error("security: connection %s for a user it does not belong to", op)
            raise OwnershipError(user_id, connection.user_id, "connection")
