"""Opening the database: URL checks, SQLite pragmas, migrations at start."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from corral.errors import ConfigurationError

log = logging.getLogger("corral.store")

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number: every corral process migrating one PostgreSQL database takes this lock.
PG_MIGRATION_LOCK = 7_415_202_611


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = 10, readers: bool = False) -> AsyncEngine:
    """An async engine for ``url`` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``).

    SQLite: the file's folder is created, WAL journal and ``synchronous=NORMAL`` are set on
    every connection, and a busy timeout covers the rare wait. The writing engine has ONE
    connection — SQLite has one writer, and pooled connections contending for it sleep in the
    busy handler (measured: half the runs/s and three times the p99, bench/README.md). With
    ``readers=True`` it is a pool of read-only connections beside it: WAL lets them read while
    the writer writes, so reads do not queue behind writes.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"CORRAL_DATABASE_URL {url!r} is not a database URL") from exc
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        if driver != "aiosqlite":
            raise ConfigurationError("use a sqlite+aiosqlite:// URL for SQLite")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        size = 4 if readers else 1
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, pool_size=size, max_overflow=0, pool_timeout=60
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            if readers:
                cur.execute("PRAGMA query_only=ON")
            cur.close()

        return engine
    if backend == "postgresql":
        if driver != "asyncpg":
            raise ConfigurationError("use a postgresql+asyncpg:// URL for PostgreSQL")
        return create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
        )
    raise ConfigurationError(
        f"unsupported database {backend!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://"
    )


def _upgrade(connection: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Apply the migrations up to head (idempotent; concurrent starts on PostgreSQL wait)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})"))
        await conn.run_sync(_upgrade)


async def ping(engine: AsyncEngine, timeout_s: float = 5.0) -> bool:
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
