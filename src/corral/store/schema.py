"""The tables, as SQLAlchemy Core metadata: what the migrations build, in one place to read.

Timestamps are ISO-8601 UTC strings with a ``Z`` (the contract's wire form); JSON values are
stored as text. The statements that use these tables are in :mod:`corral.store.statements`.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

ID = String(160)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

threads = Table(
    "threads",
    metadata,
    Column("thread_id", ID, primary_key=True),
    Column("user_id", ID, nullable=False, index=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=True),
    Column("title", Text, nullable=True),
    Column("metadata", Text, nullable=True),
    Column("state", Text, nullable=True),
    # An AG-UI threadId bound to this thread (unique per user), when one was given.
    Column("external_id", String(256), nullable=True),
    Index("ix_threads_user_id_updated_at", "user_id", "updated_at"),
)

runs = Table(
    "runs",
    metadata,
    # A monotonic key for "newest first" and cursors; run_id is what users see.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", ID, nullable=False, unique=True),
    Column("user_id", ID, nullable=False),
    Column("thread_id", ID, nullable=False),
    Column("agent", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input", Text, nullable=False),
    Column("output", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("started_at", String(32), nullable=True),
    Column("finished_at", String(32), nullable=True),
    Column("last_seq", Integer, nullable=False, server_default="0"),
    Column("timeout_s", Float, nullable=True),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("lease_until", Float, nullable=True),
    Column("lease_owner", String(160), nullable=True),
    Column("cancel_reason", Text, nullable=True),
    # Who the run acts for (roles, claims) so that any worker can give the agent its identity.
    Column("identity", Text, nullable=True),
    # W3C trace context of the request that started the run.
    Column("trace", Text, nullable=True),
    # The open input request (JSON: request_id, prompt, schema) while the run waits for input,
    # and the accepted answer until the run takes it.
    Column("input_request", Text, nullable=True),
    Column("input_answer", Text, nullable=True),
    Index("ix_runs_user_id_id", "user_id", "id"),
    Index("ix_runs_thread_id_status", "thread_id", "status"),
    Index("ix_runs_status", "status"),
    Index("ix_runs_user_id_status", "user_id", "status"),
)

events = Table(
    "events",
    metadata,
    Column("run_id", ID, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", String(32), nullable=False),
    Column("body", Text, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", ID, primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("run_id", ID, nullable=False),
    Column("created_at", Float, nullable=False, index=True),
)
