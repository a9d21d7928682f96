"""The database of one process: SQLite on threads of its own, or PostgreSQL on asyncpg.

:class:`Database` runs functions written once against :class:`~corral.store.sql.Sql`: ``read``
(a consistent snapshot) and ``write`` (one transaction). It is the only place that sees driver
exceptions, and it turns them into corral's: :class:`~corral.errors.StoreUnavailable` for a
database that cannot be reached (and :class:`StoreBusy` for a transaction that lost a race and
will succeed when run again), :class:`~corral.errors.InvalidRequest` for a value the database
cannot hold. Anything else is a bug and propagates as it is.

SQLite: one writing connection on one thread — SQLite has one writer, and connections that
contend for it sleep in the busy handler (measured: half the runs/s and three times the p99,
bench/README.md) — so a batch of runs and events costs one thread hop and one commit, not one
hop per statement; reads go to a small pool of read-only connections on threads of their own,
which WAL lets read while the writer writes. PostgreSQL: SQLAlchemy's asyncpg engine (pool,
pre-ping, migrations), with statements sent to the adapted DBAPI cursor inside ``run_sync``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from corral.errors import ConfigurationError, InvalidRequest, StoreUnavailable
from corral.outage import Outage
from corral.store.sql import Dialect, Sql

log = logging.getLogger("corral.store")

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number: every corral process migrating one PostgreSQL database takes this lock.
PG_MIGRATION_LOCK = 7_415_202_611
SQLITE_READERS = 4
CLOSE_WAIT_S = 10.0  # closing waits this long for statements whose callers went away
# Deadlock detected, serialization failure: the transaction lost a race; run it again.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


class StoreBusy(StoreUnavailable):
    """The transaction lost a race (deadlock, serialization, a locked SQLite file): retry it."""


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlstate(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        for name in ("sqlstate", "pgcode"):
            state = getattr(seen, name, None)
            if isinstance(state, str):
                return state
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def translate(exc: BaseException) -> BaseException:
    """The corral error a driver exception means, or ``exc`` itself for a bug."""
    if isinstance(exc, StoreUnavailable | InvalidRequest):
        return exc
    state = _sqlstate(exc)
    if state in RETRYABLE_SQLSTATES:
        return StoreBusy(f"{type(exc).__name__} ({state})")
    if state is not None and state.startswith("22"):  # data exception: out of range, bad text
        return InvalidRequest(
            "a value in the request is out of the range the server stores; check the numbers",
            [{"field": "(request)", "message": f"data error {state}", "type": "value_error"}],
        )
    if isinstance(exc, OverflowError):  # sqlite3: an int past 64 bits
        return InvalidRequest(
            "a number in the request is too large",
            [{"field": "(request)", "message": "integer too large", "type": "int_range"}],
        )
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in str(exc) or "busy" in str(exc):
            return StoreBusy(str(exc))
        return StoreUnavailable(str(exc))
    away_states = ("08", "53", "57")  # connection, resources, operator intervention
    if (
        isinstance(exc, OSError | ConnectionError | TimeoutError)
        or (state is not None and state.startswith(away_states))
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
        or type(exc).__name__ in ("InterfaceError", "OperationalError", "InternalClientError")
        or "connection" in type(exc).__name__.lower()
    ):
        return StoreUnavailable(f"{type(exc).__name__}")
    return exc


def _reraise(exc: Exception, outage: Outage | None = None) -> NoReturn:
    """Raise what ``exc`` means to corral (itself when it is a bug); a database out of
    reach is noted on ``outage`` (logged once, not once per try)."""
    translated = translate(exc)
    if outage is not None and type(translated) is StoreUnavailable:
        outage.failed(translated)
    if translated is exc:
        raise exc
    raise translated from exc


class Database:
    """Runs store functions on the database; ``async with`` opens (and migrates) and closes.

    ``read`` and ``write`` may be called from any task concurrently; cancelling the caller
    does not cancel a statement already running on a thread or in PostgreSQL (it finishes, and
    its result is dropped).
    """

    dialect: Dialect

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def read(self, fn: Callable[[Sql], T]) -> T:
        raise NotImplementedError

    async def write(self, fn: Callable[[Sql], T]) -> T:
        raise NotImplementedError

    async def ping(self, timeout_s: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self.read(_select_one)
            return True
        except Exception:
            return False


def _select_one(sql: Sql) -> None:
    from corral.store.statements import SELECT_ONE

    sql.value(SELECT_ONE)


def open_database(url: str, *, pool_size: int = 10) -> Database:
    """The :class:`Database` for ``url`` (SQLite or PostgreSQL); not opened yet."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"CORRAL_DATABASE_URL {url!r} is not a database URL") from exc
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        if driver not in ("aiosqlite", "pysqlite"):
            raise ConfigurationError("use a sqlite+aiosqlite:// (or sqlite://) URL for SQLite")
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigurationError("SQLite needs a file: sqlite+aiosqlite:///path/corral.db")
        return SqliteDatabase(Path(parsed.database).expanduser())
    if backend == "postgresql":
        if driver != "asyncpg":
            raise ConfigurationError("use a postgresql+asyncpg:// URL for PostgreSQL")
        return PostgresDatabase(url, pool_size=pool_size)
    raise ConfigurationError(
        f"unsupported database {backend!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://"
    )


def _upgrade(connection: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


# -- SQLite ---------------------------------------------------------------------------------


class SqliteDatabase(Database):
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()  # this database's per-thread connection
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # guards _connections (appended from threads)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._migrate)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="corral-sqlite-writer")
        self._readers = ThreadPoolExecutor(SQLITE_READERS, thread_name_prefix="corral-sqlite-read")

    def _migrate(self) -> None:
        engine = create_sync_engine(f"sqlite:///{self.path}")
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                _upgrade(conn)
        finally:
            engine.dispose()

    def _connection(self, *, readonly: bool) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            if readonly:
                conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _in_transaction(self, fn: Callable[[Sql], T], begin: str, readonly: bool) -> T:
        conn = self._connection(readonly=readonly)
        cursor = conn.cursor()
        try:
            cursor.execute(begin)
            try:
                result = fn(Sql(cursor, "sqlite"))
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            return result
        except Exception as exc:
            _reraise(exc)
        finally:
            cursor.close()

    async def read(self, fn: Callable[[Sql], T]) -> T:
        if self._readers is None:
            raise StoreUnavailable("the database is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._in_transaction, fn, "BEGIN", True)

    async def write(self, fn: Callable[[Sql], T]) -> T:
        if self._writer is None:
            raise StoreUnavailable("the database is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._writer, self._in_transaction, fn, "BEGIN IMMEDIATE", False
        )

    async def close(self) -> None:
        pools = [p for p in (self._writer, self._readers) if p is not None]
        self._writer = self._readers = None
        for pool in pools:
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown, True)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()


# -- PostgreSQL -----------------------------------------------------------------------------


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.outage = Outage(
            log, "PostgreSQL is unreachable", "PostgreSQL is reachable again; storing goes on"
        )
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
        )
        event.listen(self.engine.sync_engine, "checkout", _refuse_open_transaction)
        self._running: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(text(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})"))
                await conn.run_sync(_upgrade)
        except Exception as exc:
            _reraise(exc)

    async def close(self) -> None:
        if self._running:
            await asyncio.wait(set(self._running), timeout=CLOSE_WAIT_S)
        await self.engine.dispose()

    def _to_the_end(self, work: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """``work`` runs to its end even when the caller is cancelled (a client that went away,
        a timeout): a cancellation that lands inside asyncpg's implicit ``BEGIN`` can leave the
        pooled connection inside a transaction the pool does not know of, and every later
        "transaction" on it a savepoint that is never committed (sqlalchemy#13381). The caller
        gets its ``CancelledError`` at once; the statement finishes and its result is dropped."""
        task = asyncio.get_running_loop().create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return asyncio.shield(task)

    @staticmethod
    def _run(connection: Connection, fn: Callable[[Sql], T]) -> T:
        dbapi: Any = connection.connection.dbapi_connection
        cursor = dbapi.cursor()
        try:
            return fn(Sql(cursor, "postgresql"))
        finally:
            cursor.close()

    async def read(self, fn: Callable[[Sql], T]) -> T:
        return await self._to_the_end(self._read(fn))

    async def write(self, fn: Callable[[Sql], T]) -> T:
        return await self._to_the_end(self._write(fn))

    async def _read(self, fn: Callable[[Sql], T]) -> T:
        try:
            async with self.engine.connect() as conn:
                result = await conn.run_sync(self._run, fn)
        except Exception as exc:
            _reraise(exc, self.outage)
        self.outage.succeeded()
        return result

    async def _write(self, fn: Callable[[Sql], T]) -> T:
        try:
            async with self.engine.begin() as conn:
                result = await conn.run_sync(self._run, fn)
        except Exception as exc:
            _reraise(exc, self.outage)
        self.outage.succeeded()
        return result


def _refuse_open_transaction(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection still inside a transaction is never handed out: what runs on it
    would run in a savepoint of that transaction, and its commit would commit nothing. The
    pool drops it and connects afresh (``DisconnectionError`` on checkout)."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_in_transaction():
        log.warning("a pooled PostgreSQL connection was left inside a transaction; replaced")
        raise DisconnectionError("left inside a transaction")
