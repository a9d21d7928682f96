"""Claims, leases and reaping on PostgreSQL: how several processes share runs safely.

PostgreSQL is the arbiter. A worker *claims* queued runs in one transaction holding the
cluster's claim lock: the candidates are the runs first in their thread whose thread is idle
and whose user is under the per-user limit; which of them start is the scheduler's choice
(:mod:`corral.core.admission`, the same rule as a single node's), fed with the database's
running counts. A claim bumps the run's ``attempt``; every later write of that worker names the
attempt, so once the lease expired and the run was reaped (attempt bumped again) the old
worker cannot append a single event (fencing). All of these run through the one writer.

A run waiting for its user's input (``waiting``) holds no running slot but keeps its thread
busy; once answered (or its question timed out) it is *resuming*: its worker takes a slot back
with :class:`~corral.store.inputs.ResumeRun`, and until then it counts toward its user's limit
here, so that it goes ahead of the user's queued runs (the scheduler's rule on a single node).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from corral.core.admission import Limits, Scheduler, Ticket
from corral.core.events import Event
from corral.store.inputs import CLAIM_LOCK
from corral.store.ops import Op, interrupt
from corral.store.records import RUN_COLUMNS, RunRecord
from corral.store.sql import Q, Sql

_LOCK = Q("SELECT pg_advisory_xact_lock(:key)")
# Runs holding a slot, or about to take one back (answered, or their question timed out).
_HOLDS_SLOT = (
    "({r}.status = 'running' OR ({r}.status = 'waiting' "
    "AND ({r}.input_answer IS NOT NULL OR {r}.input_request IS NULL)))"
)
# Runs that may start: first queued run of an idle thread, of a user under the limit.
_CANDIDATES = Q(
    "SELECT r.run_id, r.user_id, r.thread_id FROM runs r WHERE r.status = 'queued' "
    "AND NOT EXISTS (SELECT 1 FROM runs b WHERE b.thread_id = r.thread_id "
    "AND b.user_id = r.user_id AND (b.status IN ('running', 'waiting') "
    "OR (b.status = 'queued' AND b.id < r.id))) "
    "AND (SELECT count(*) FROM runs c WHERE c.user_id = r.user_id "
    f"AND {_HOLDS_SLOT.format(r='c')}) < :per_user ORDER BY r.id LIMIT :scan"
)
_RUNNING_OF = Q(
    f"SELECT user_id, count(*) FROM runs r WHERE {_HOLDS_SLOT.format(r='r')} "
    "AND user_id = ANY(CAST(:users AS text[])) GROUP BY user_id"
)
# Last column: the run's thread has no stored state (the worker then does not read it).
_TAKE = Q(
    "UPDATE runs SET status = 'running', attempt = attempt + 1, lease_owner = :owner, "
    "lease_until = :until WHERE run_id = ANY(CAST(:run_ids AS text[])) AND status = 'queued' "
    f"RETURNING {RUN_COLUMNS}, "
    "(SELECT t.state IS NULL FROM threads t WHERE t.thread_id = runs.thread_id)"
)
_RENEW = Q(
    "UPDATE runs SET lease_until = :until FROM (SELECT unnest(CAST(:run_ids AS text[])) AS "
    "run_id, unnest(CAST(:attempts AS int[])) AS attempt) AS v WHERE runs.run_id = v.run_id "
    "AND runs.attempt = v.attempt AND runs.status IN ('running', 'waiting') "
    "RETURNING runs.run_id, runs.cancel_reason, runs.input_answer IS NOT NULL"
)
_EXPIRED = Q(
    f"SELECT {RUN_COLUMNS}, lease_owner FROM runs WHERE status IN ('running', 'waiting') "
    "AND lease_until < :now ORDER BY run_id LIMIT 200 FOR UPDATE SKIP LOCKED"
)
_FENCE_OUT = Q("UPDATE runs SET attempt = attempt + 1, lease_owner = NULL WHERE run_id = :run_id")
_REQUEST_CANCEL = Q(
    "UPDATE runs SET cancel_reason = :reason WHERE run_id = :run_id AND user_id = :user_id "
    "AND status IN ('running', 'waiting')"
)
_COUNTS = Q(
    "SELECT status, count(*) FROM runs WHERE status IN ('running', 'queued') GROUP BY status"
)


class ClaimRuns(Op[list[RunRecord]]):
    """Take up to ``limit`` runs for ``owner``, leased for ``lease_s``."""

    __slots__ = ("lease_s", "limit", "limits", "owner")

    def __init__(self, owner: str, limit: int, lease_s: float, limits: Limits) -> None:
        self.owner = owner
        self.limit = limit
        self.lease_s = lease_s
        self.limits = limits

    def apply(self, sql: Sql, emitted: list[Event]) -> list[RunRecord]:
        sql.value(_LOCK, {"key": CLAIM_LOCK})
        candidates = sql.all(
            _CANDIDATES,
            {"per_user": self.limits.max_running_per_user, "scan": max(64, self.limit * 4)},
        )
        if not candidates:
            return []
        scheduler = Scheduler(self.limits, capacity=self.limit)
        users = sorted({user for _run, user, _thread in candidates})
        for user, count in sql.all(_RUNNING_OF, {"users": users}):
            scheduler.add_running(user, "", count=int(count))
        for run_id, user, thread in candidates:
            scheduler.add(Ticket(user, thread, run_id), check_queue=False)
        chosen = [t.run_id for t in scheduler.take(self.limit)]
        if not chosen:
            return []
        rows = sql.all(
            _TAKE,
            {"owner": self.owner, "until": time.time() + self.lease_s, "run_ids": chosen},
        )
        order = {run_id: i for i, run_id in enumerate(chosen)}
        records = [RunRecord.from_row(r, new_thread=bool(r[-1])) for r in rows]
        return sorted(records, key=lambda r: order[r.run_id])


class RenewLeases(Op[tuple[set[str], dict[str, str], set[str]]]):
    """Extend the leases ``[(run_id, attempt)]`` (waiting runs' too: a worker that dies while
    its run waits leaves it to the reaper). Returns the runs whose lease is lost, ``{run_id:
    reason}`` of runs whose cancellation was asked for, and the runs with a stored answer —
    the fallbacks when a broadcast was missed."""

    __slots__ = ("lease_s", "leases")

    def __init__(self, leases: Sequence[tuple[str, int]], lease_s: float) -> None:
        self.leases = sorted(leases)
        self.lease_s = lease_s

    def apply(self, sql: Sql, emitted: list[Event]) -> tuple[set[str], dict[str, str], set[str]]:
        rows = sql.all(
            _RENEW,
            {
                "until": time.time() + self.lease_s,
                "run_ids": [r for r, _a in self.leases],
                "attempts": [a for _r, a in self.leases],
            },
        )
        kept = {row[0] for row in rows}
        cancels = {row[0]: row[1] for row in rows if row[1] is not None}
        answered = {row[0] for row in rows if row[2]}
        return {r for r, _a in self.leases} - kept, cancels, answered


@dataclass(frozen=True, slots=True)
class Reaped:
    """A run ended because its lease expired, and the worker that held it."""

    run_id: str
    user_id: str
    owner: str | None


class ReapExpired(Op[list[Reaped]]):
    """End runs whose lease expired (their worker died or stalled) as ``interrupted``."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def apply(self, sql: Sql, emitted: list[Event]) -> list[Reaped]:
        reaped = []
        for row in sql.all(_EXPIRED, {"now": time.time()}):
            run = RunRecord.from_row(row[:-1])
            # Fence the old worker out before anything else is written.
            sql.execute(_FENCE_OUT, {"run_id": run.run_id})
            emitted.extend(interrupt(sql, run, self.message))
            reaped.append(Reaped(run.run_id, run.user_id, row[-1]))
        return reaped


class RequestCancel(Op[bool]):
    """Record a cancellation for whichever worker executes the caller's run."""

    __slots__ = ("reason", "run_id", "user_id")

    def __init__(self, user_id: str, run_id: str, reason: str) -> None:
        self.user_id = user_id
        self.run_id = run_id
        self.reason = reason

    def apply(self, sql: Sql, emitted: list[Event]) -> bool:
        params = {"run_id": self.run_id, "user_id": self.user_id, "reason": self.reason}
        return sql.execute(_REQUEST_CANCEL, params) == 1


def run_counts(sql: Sql) -> tuple[int, int]:
    """(running, queued) runs of the whole cluster."""
    found = dict(sql.all(_COUNTS))
    return int(found.get("running", 0)), int(found.get("queued", 0))
