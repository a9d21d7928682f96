"""SQL written once for SQLite and PostgreSQL, run on a plain DBAPI cursor.

A :class:`Q` is SQL text with ``:name`` parameters, translated once, at import, to each
driver's form (sqlite3 takes ``:name`` itself; asyncpg, behind SQLAlchemy's adapter, takes
``$1``...). The store runs many small statements per batch, so they go straight to the driver's
cursor: measured here, SQLAlchemy's ``exec_driver_sql`` costs ~50 µs more per statement than
the adapted cursor on PostgreSQL, and Core's compile-and-execute path more still; sqlite3's own
cursor costs a few µs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]
Params = Mapping[str, Any]

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class Q:
    """One statement: ``Q("SELECT ... WHERE run_id = :run_id")``; ``pg=`` when the text differs."""

    __slots__ = ("_pg", "_pg_names", "sqlite")

    def __init__(self, sqlite: str, *, pg: str | None = None) -> None:
        self.sqlite = sqlite
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        self._pg = _PARAM.sub(number, pg if pg is not None else sqlite)
        self._pg_names = tuple(names)

    def text(self, dialect: Dialect) -> str:
        return self.sqlite if dialect == "sqlite" else self._pg

    def bind(self, dialect: Dialect, params: Params | None) -> tuple[str, Any]:
        if dialect == "sqlite":
            return self.sqlite, params or {}
        values = params or {}
        return self._pg, tuple(values[name] for name in self._pg_names)

    def __repr__(self) -> str:
        return f"Q({self.sqlite[:60]!r})"


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def execute(self, operation: str, parameters: Any = ...) -> Any: ...

    def executemany(self, operation: str, seq_of_parameters: Any) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...


class Sql:
    """Statements on one connection inside one transaction (or one read)."""

    __slots__ = ("_cursor", "dialect")

    def __init__(self, cursor: Cursor, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect: Dialect = dialect

    def execute(self, q: Q, params: Params | None = None) -> int:
        """Run ``q``; returns the row count."""
        text, args = q.bind(self.dialect, params)
        self._cursor.execute(text, args)
        return int(self._cursor.rowcount or 0)

    def one(self, q: Q, params: Params | None = None) -> tuple[Any, ...] | None:
        text, args = q.bind(self.dialect, params)
        self._cursor.execute(text, args)
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)

    def value(self, q: Q, params: Params | None = None) -> Any:
        row = self.one(q, params)
        return None if row is None else row[0]

    def all(self, q: Q, params: Params | None = None) -> list[tuple[Any, ...]]:
        text, args = q.bind(self.dialect, params)
        self._cursor.execute(text, args)
        return [tuple(r) for r in self._cursor.fetchall()]

    def many(self, q: Q, rows: Iterable[Params]) -> None:
        """Run ``q`` once per row of parameters (the driver's executemany)."""
        args: Sequence[Any] = [q.bind(self.dialect, r)[1] for r in rows]
        if args:
            self._cursor.executemany(q.text(self.dialect), args)
