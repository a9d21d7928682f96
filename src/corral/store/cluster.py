"""Several processes on one PostgreSQL database: claims, leases, fencing, reaping.

PostgreSQL is the arbiter. A worker *claims* a queued run in one transaction that holds the
user's advisory lock, so the per-user running limit and per-thread order hold across every
process. A claim bumps the run's ``attempt``; every later write of that worker names the
attempt, so once the lease expired and the run was reaped (attempt bumped again) the old
worker cannot append a single event (fencing).
"""

from __future__ import annotations

import enum
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.core.events import Event, EventType, RunStatus, dumps
from corral.store.models import EventRow, RunRow
from corral.store.runs import RunRecord, RunStore


class Claim(enum.Enum):
    CLAIMED = "claimed"
    BUSY = "busy"  # the user or the thread has no room now; stays queued
    GONE = "gone"  # no longer queued (finished, cancelled, claimed elsewhere)


@dataclass(frozen=True, slots=True)
class ClaimResult:
    outcome: Claim
    run: RunRecord | None = None


def _lock_key(user_id: str) -> int:
    """A stable 63-bit advisory-lock key for one user (same in every process)."""
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big") >> 1


class ClusterStore(RunStore):
    """The queries several corral processes coordinate through (PostgreSQL only)."""

    async def _lock_user(self, session: AsyncSession, user_id: str) -> None:
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(user_id)})

    async def claim(
        self, run_id: str, worker_id: str, *, lease_s: float, max_running_per_user: int
    ) -> ClaimResult:
        """Take a queued run for ``worker_id`` if its user and thread have room."""
        async with self.sessions() as session, session.begin():
            user_id = await session.scalar(select(RunRow.user_id).where(RunRow.run_id == run_id))
            if user_id is None:
                return ClaimResult(Claim.GONE)
            await self._lock_user(session, user_id)
            row = await session.scalar(
                select(RunRow).where(RunRow.run_id == run_id).with_for_update()
            )
            if row is None or row.status != RunStatus.QUEUED.value:
                return ClaimResult(Claim.GONE)
            running = await session.scalar(
                select(func.count()).where(
                    RunRow.user_id == user_id, RunRow.status == RunStatus.RUNNING.value
                )
            )
            if (running or 0) >= max_running_per_user:
                return ClaimResult(Claim.BUSY)
            ahead = await session.scalar(
                select(func.count()).where(
                    RunRow.thread_id == row.thread_id,
                    RunRow.user_id == user_id,
                    (RunRow.status == RunStatus.RUNNING.value)
                    | and_(RunRow.status == RunStatus.QUEUED.value, RunRow.id < row.id),
                )
            )
            if ahead:
                return ClaimResult(Claim.BUSY)
            row.status = RunStatus.RUNNING.value
            row.attempt = row.attempt + 1
            row.lease_owner = worker_id
            row.lease_until = time.time() + lease_s
            await session.flush()
            return ClaimResult(Claim.CLAIMED, RunRecord.from_row(row))

    async def renew(
        self, leases: dict[str, int], lease_s: float
    ) -> tuple[set[str], dict[str, str]]:
        """Extend the leases ``{run_id: attempt}``.

        Returns the run ids whose lease is lost, and ``{run_id: reason}`` of runs whose
        cancellation was requested (the fallback when the broadcast was missed).
        """
        lost: set[str] = set()
        cancels: dict[str, str] = {}
        until = time.time() + lease_s
        async with self.sessions() as session, session.begin():
            # Rows are locked in run_id order, as the event writer does: no deadlock.
            for run_id, attempt in sorted(leases.items()):
                result = await session.execute(
                    update(RunRow)
                    .where(
                        RunRow.run_id == run_id,
                        RunRow.attempt == attempt,
                        RunRow.status == RunStatus.RUNNING.value,
                    )
                    .values(lease_until=until)
                    .returning(RunRow.cancel_reason)
                )
                row = result.first()
                if row is None:
                    lost.add(run_id)
                elif row[0] is not None:
                    cancels[run_id] = row[0]
        return lost, cancels

    async def request_cancel(self, user_id: str, run_id: str, reason: str) -> bool:
        """Record a cancellation for whichever worker runs the caller's run."""
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(RunRow)
                .where(
                    RunRow.run_id == run_id,
                    RunRow.user_id == user_id,
                    RunRow.status == RunStatus.RUNNING.value,
                )
                .values(cancel_reason=reason)
            )
        return getattr(result, "rowcount", 0) == 1

    async def reap_expired(self, message: str) -> list[Event]:
        """End runs whose lease expired (their worker died or stalled) as ``interrupted``."""
        now = time.time()
        async with self.sessions() as session, session.begin():
            rows = list(
                await session.scalars(
                    select(RunRow)
                    .where(RunRow.status == RunStatus.RUNNING.value, RunRow.lease_until < now)
                    .with_for_update(skip_locked=True)
                    .limit(200)
                )
            )
            events = []
            for row in rows:
                row.attempt += 1  # fences the old worker out before anything else is written
                row.lease_owner = None
                events.extend(await self._interrupt(session, row, message))
            return events

    async def cancel_queued(self, user_id: str, run_id: str, reason: str) -> Event | None:
        """Cancel the caller's run if it is still queued and unclaimed; its only event."""
        async with self.sessions() as session, session.begin():
            await self._lock_user(session, user_id)
            row = await session.scalar(
                select(RunRow)
                .where(RunRow.run_id == run_id, RunRow.user_id == user_id)
                .with_for_update()
            )
            if row is None or row.status != RunStatus.QUEUED.value:
                return None
            event = Event(
                type=EventType.AGENT_CANCELLED,
                run_id=row.run_id,
                thread_id=row.thread_id,
                seq=row.last_seq + 1,
                data={"reason": reason},
                user_id=user_id,
            )
            await session.execute(
                insert(EventRow).values(
                    run_id=run_id,
                    seq=event.seq,
                    type=event.type.value,
                    body=event.to_json().decode(),
                )
            )
            row.status = RunStatus.CANCELLED.value
            row.error = dumps({"type": "cancelled", "message": reason}).decode()
            row.finished_at = event.ts
            row.last_seq = event.seq
            row.attempt += 1
            return event

    async def is_finished(self, run_id: str) -> bool:
        async with self.read_sessions() as session:
            status = await session.scalar(select(RunRow.status).where(RunRow.run_id == run_id))
        return status is not None and RunStatus(status).finished

    async def queued_count(self, user_id: str) -> int:
        async with self.read_sessions() as session:
            n = await session.scalar(
                select(func.count()).where(
                    RunRow.user_id == user_id, RunRow.status == RunStatus.QUEUED.value
                )
            )
        return int(n or 0)

    async def dispatchable(
        self, max_running_per_user: int, *, older_than_s: float = 2.0, limit: int = 200
    ) -> list[str]:
        """Queued runs that could be claimed now — first of their thread, thread idle, user
        under the limit — and were queued over ``older_than_s`` ago: to (re)dispatch."""
        cutoff = (datetime.now(UTC) - timedelta(seconds=older_than_s)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )
        running = RunRow.status == RunStatus.RUNNING.value
        async with self.read_sessions() as session:
            first_per_thread = (
                select(func.min(RunRow.id))
                .where(RunRow.status == RunStatus.QUEUED.value)
                .group_by(RunRow.thread_id)
            )
            busy_threads = select(RunRow.thread_id).where(running)
            full_users = (
                select(RunRow.user_id)
                .where(running)
                .group_by(RunRow.user_id)
                .having(func.count() >= max_running_per_user)
            )
            rows = await session.scalars(
                select(RunRow.run_id)
                .where(
                    RunRow.id.in_(first_per_thread),
                    RunRow.thread_id.not_in(busy_threads),
                    RunRow.user_id.not_in(full_users),
                    RunRow.created_at < cutoff,
                )
                .order_by(RunRow.id)
                .limit(limit)
            )
            return list(rows)
