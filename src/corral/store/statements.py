"""Every statement the store runs, written once (see :class:`corral.store.sql.Q`)."""

from __future__ import annotations

from corral.store.records import RUN_COLUMNS, THREAD_COLUMNS
from corral.store.sql import Q

SELECT_ONE = Q("SELECT 1")

UNFINISHED_STATUSES = "('queued', 'running', 'waiting')"

# -- runs -----------------------------------------------------------------------------------

GET_RUN = Q(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = :run_id AND user_id = :user_id")
GET_RUN_ANY = Q(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = :run_id")
RUN_OWNER = Q("SELECT user_id FROM runs WHERE run_id = :run_id")
RUN_STATUS = Q("SELECT status FROM runs WHERE run_id = :run_id")
COUNT_QUEUED = Q("SELECT count(*) FROM runs WHERE user_id = :user_id AND status = 'queued'")
UNFINISHED_OF_THREAD = Q(
    "SELECT run_id FROM runs WHERE thread_id = :thread_id AND user_id = :user_id "
    f"AND status IN {UNFINISHED_STATUSES} ORDER BY id"
)
INSERT_RUN = Q(
    "INSERT INTO runs (run_id, user_id, thread_id, agent, status, input, created_at, last_seq, "
    "timeout_s, attempt, identity, trace) VALUES (:run_id, :user_id, :thread_id, :agent, "
    "'queued', :input, :created_at, 0, :timeout_s, :attempt, :identity, :trace) RETURNING id"
)
THREAD_HISTORY = Q(
    f"SELECT {RUN_COLUMNS} FROM runs WHERE thread_id = :thread_id AND user_id = :user_id "
    "AND id < :before ORDER BY id DESC LIMIT :limit"
)
RUN_ROW_ID = Q("SELECT id FROM runs WHERE run_id = :run_id AND user_id = :user_id")


def list_runs_query(*, thread: bool, status: bool, cursor: bool) -> Q:
    """The caller's runs, newest first, with the filters asked for (one more row than the page:
    it says whether there is a next page)."""
    where = ["user_id = :user_id"]
    if thread:
        where.append("thread_id = :thread_id")
    if status:
        where.append("status = :status")
    if cursor:
        where.append("id < :cursor")
    return Q(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit"
    )


MARK_STARTED = Q("UPDATE runs SET status = 'running', started_at = :ts WHERE run_id = :run_id")
# input_requested / input_received (contract §9): the run waits for its user, and goes on.
MARK_WAITING = Q(
    "UPDATE runs SET status = 'waiting', input_request = :request, input_answer = NULL "
    "WHERE run_id = :run_id AND status = 'running'"
)
MARK_RESUMED = Q(
    "UPDATE runs SET status = 'running', input_request = NULL, input_answer = NULL "
    "WHERE run_id = :run_id AND status IN ('running', 'waiting')"
)
MARK_FINISHED = Q(
    "UPDATE runs SET status = :status, output = :output, error = :error, finished_at = :ts, "
    "input_request = NULL, input_answer = NULL, lease_owner = NULL WHERE run_id = :run_id"
)
SET_LAST_SEQ = Q("UPDATE runs SET last_seq = :seq WHERE run_id = :run_id")
SET_LAST_SEQ_FENCED = Q(
    "UPDATE runs SET last_seq = :seq WHERE run_id = :run_id AND attempt = :attempt"
)
# PostgreSQL: every fenced run of a batch in one statement; those not returned lost their lease.
SET_LAST_SEQ_FENCED_MANY = Q(
    "UPDATE runs SET last_seq = v.seq FROM (SELECT unnest(CAST(:run_ids AS text[])) AS run_id, "
    "unnest(CAST(:attempts AS int[])) AS attempt, unnest(CAST(:seqs AS int[])) AS seq) AS v "
    "WHERE runs.run_id = v.run_id AND runs.attempt = v.attempt RETURNING runs.run_id"
)
ATTEMPT_OF = Q("SELECT attempt FROM runs WHERE run_id = :run_id")
TOUCH_THREAD_OF_RUN = Q("UPDATE threads SET updated_at = :ts WHERE thread_id = :thread_id")

# -- events ---------------------------------------------------------------------------------

INSERT_EVENT = Q(
    "INSERT INTO events (run_id, seq, type, body) VALUES (:run_id, :seq, :type, :body)"
)
EVENTS_AFTER = Q(
    "SELECT body FROM events WHERE run_id = :run_id AND seq > :after ORDER BY seq LIMIT :limit"
)
TOOL_EVENTS = Q(
    "SELECT body FROM events WHERE run_id = :run_id "
    "AND type IN ('tool_executing', 'tool_completed') ORDER BY seq"
)

# -- unfinished runs (recovery) ---------------------------------------------------------------

UNFINISHED_RUNS = Q(f"SELECT {RUN_COLUMNS} FROM runs WHERE status IN {UNFINISHED_STATUSES}")
INTERRUPT_RUN = Q(
    "UPDATE runs SET status = 'failed', error = :error, finished_at = :ts, last_seq = :seq, "
    "input_request = NULL, input_answer = NULL, lease_owner = NULL "
    "WHERE run_id = :run_id AND last_seq = :previous_seq"
)
CANCEL_QUEUED = Q(
    "UPDATE runs SET status = 'cancelled', error = :error, finished_at = :ts, "
    "last_seq = last_seq + 1, attempt = attempt + 1 "
    "WHERE run_id = :run_id AND user_id = :user_id AND status = 'queued' "
    "RETURNING thread_id, last_seq, agent"
)

# -- threads --------------------------------------------------------------------------------

INSERT_THREAD = Q(
    "INSERT INTO threads (thread_id, user_id, created_at, updated_at, title, metadata) "
    "VALUES (:thread_id, :user_id, :ts, :ts, :title, :metadata)"
)
THREAD_OWNER = Q("SELECT user_id FROM threads WHERE thread_id = :thread_id")
GET_THREAD = Q(
    f"SELECT {THREAD_COLUMNS} FROM threads WHERE thread_id = :thread_id AND user_id = :user_id"
)
TOUCH_THREAD = Q("UPDATE threads SET updated_at = :ts WHERE thread_id = :thread_id")
THREAD_STATE = Q("SELECT state FROM threads WHERE thread_id = :thread_id AND user_id = :user_id")
LIST_THREADS = Q(
    f"SELECT {THREAD_COLUMNS} FROM threads WHERE user_id = :user_id "
    "ORDER BY updated_at DESC, thread_id DESC LIMIT :limit"
)
LIST_THREADS_AFTER = Q(
    f"SELECT {THREAD_COLUMNS} FROM threads WHERE user_id = :user_id "
    "AND (updated_at < :ts OR (updated_at = :ts AND thread_id < :thread_id)) "
    "ORDER BY updated_at DESC, thread_id DESC LIMIT :limit"
)
SAVE_STATE = Q(
    "UPDATE threads SET state = :state WHERE thread_id = :thread_id AND user_id = :user_id"
)

# -- idempotency ----------------------------------------------------------------------------

IDEMPOTENCY_GET = Q(
    "SELECT request_hash, run_id, created_at FROM idempotency_keys "
    "WHERE user_id = :user_id AND key = :key"
)
IDEMPOTENCY_DELETE = Q("DELETE FROM idempotency_keys WHERE user_id = :user_id AND key = :key")
IDEMPOTENCY_INSERT = Q(
    "INSERT INTO idempotency_keys (user_id, key, request_hash, run_id, created_at) "
    "VALUES (:user_id, :key, :request_hash, :run_id, :created_at)"
)
IDEMPOTENCY_PURGE = Q("DELETE FROM idempotency_keys WHERE created_at < :cutoff")

# -- cluster --------------------------------------------------------------------------------

LOCK_USER = Q("SELECT pg_advisory_xact_lock(:key)")

# -- threads bound to an outside id (an AG-UI threadId), per user ----------------------------

THREAD_BY_EXTERNAL_ID = Q(
    "SELECT thread_id FROM threads WHERE user_id = :user_id AND external_id = :external_id "
    "ORDER BY created_at LIMIT 1"
)
INSERT_BOUND_THREAD = Q(
    "INSERT INTO threads (thread_id, user_id, created_at, updated_at, external_id) "
    "VALUES (:thread_id, :user_id, :ts, :ts, :external_id)"
)
EXTERNAL_ID_OF_THREAD = Q(
    "SELECT external_id FROM threads WHERE thread_id = :thread_id AND user_id = :user_id"
)
