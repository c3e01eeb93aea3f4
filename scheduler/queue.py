"""The durable task queue over `tasks_scheduled`: atomic claims with a lease, retries, dead letters.

Status path: pending → running (claimed, `attempts` + 1, `locked_by`, `lease_expires_at`) → done | cancelled |
failed. A worker that dies while holding a lease leaves its task `running`; once the lease has expired any worker
reclaims it. On PostgreSQL the claim is one statement, `WITH claimable AS MATERIALIZED (SELECT … LIMIT n FOR
UPDATE SKIP LOCKED) UPDATE … RETURNING …`, so replicas never wait for each other and never claim the same row.
SQLite (the embedded default) has no row locks: the claim's UPDATE repeats the "due" condition and the worker
reads back what it actually got, which is safe because SQLite serialises writers; one worker is what the
embedded setup runs.

Every state change after the claim is fenced by `locked_by` and `status = 'running'`: a worker whose lease was
taken over cannot complete, retry or cancel the task anymore.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from leadbot import metrics
from leadbot.clock import now
from leadbot.db.models import Contact, Conversation, DeadLetter, TaskScheduled
from leadbot.db.session import is_sqlite, session_scope


def _due(moment: datetime):  # noqa: ANN202 - a SQLAlchemy boolean clause
    return or_(
        and_(TaskScheduled.status == "pending", TaskScheduled.run_at <= moment),
        and_(TaskScheduled.status == "running", TaskScheduled.lease_expires_at < moment),
    )


def backoff(attempts: int, base_seconds: float, max_seconds: float) -> timedelta:
    """Exponential backoff after the n-th failed attempt: base, 2·base, 4·base … capped."""
    return timedelta(seconds=min(max_seconds, base_seconds * 2 ** max(0, attempts - 1)))


class TaskQueue:
    def __init__(self, engine: Engine, worker_id: str, lease_seconds: float) -> None:
        self.engine = engine
        self.worker_id = worker_id[:64]
        self.lease = timedelta(seconds=lease_seconds)
        self._sqlite = is_sqlite(str(engine.url))

    def _claim_values(self, current: datetime) -> dict[str, Any]:
        return {
            "status": "running",
            "attempts": TaskScheduled.attempts + 1,
            "locked_by": self.worker_id,
            "lease_expires_at": current + self.lease,
            "updated_at": current,
        }

    def claim(self, limit: int) -> list[int]:
        """Claim up to `limit` due tasks (oldest `run_at` first) for this worker; returns their ids."""
        with session_scope(self.engine) as session:
            current = now()
            due = select(TaskScheduled.id).where(_due(current)).order_by(TaskScheduled.run_at).limit(limit)
            if self._sqlite:
                return self._claim_sqlite(session, due, current)
            # One round trip: the CTE locks up to `limit` due rows nobody else holds, the UPDATE takes exactly
            # those. MATERIALIZED runs the CTE once; as `id IN (subquery)` the planner may re-run the locking
            # subquery per scanned row, each run skipping the rows already taken, and claim far beyond `limit`.
            locked = (
                due.with_for_update(skip_locked=True).cte("claimable").prefix_with("MATERIALIZED", dialect="postgresql")
            )
            rows = session.execute(
                update(TaskScheduled)
                .where(TaskScheduled.id == locked.c.id, _due(current))
                .values(**self._claim_values(current))
                .returning(TaskScheduled.id, TaskScheduled.run_at)
                .execution_options(synchronize_session=False)
            ).all()
            # RETURNING has no order; firing goes oldest first.
            return [task_id for task_id, _ in sorted(rows, key=lambda row: (row[1], row[0]))]

    def _claim_sqlite(self, session: Session, due: Select, current: datetime) -> list[int]:
        ids = list(session.execute(due).scalars())
        if not ids:
            return []
        session.execute(
            update(TaskScheduled)
            .where(TaskScheduled.id.in_(ids), _due(current))
            .values(**self._claim_values(current))
            .execution_options(synchronize_session=False)
        )
        claimed = session.execute(
            select(TaskScheduled.id)
            .where(
                TaskScheduled.id.in_(ids),
                TaskScheduled.locked_by == self.worker_id,
                TaskScheduled.status == "running",
                TaskScheduled.lease_expires_at == current + self.lease,
            )
            .order_by(TaskScheduled.run_at)
        ).scalars()
        return list(claimed)

    def _owned_query(self) -> Select:
        # Conversation and contact come in the same round trip (the fire-time checks need them). The row lock on
        # the task fences the checks against a takeover: a worker reclaiming an expired lease skips locked rows.
        return (
            select(TaskScheduled, Conversation, Contact)
            .join(Conversation, Conversation.id == TaskScheduled.conversation_id)
            .join(Contact, Contact.id == Conversation.contact_id)
            .where(TaskScheduled.locked_by == self.worker_id, TaskScheduled.status == "running")
            .with_for_update(of=TaskScheduled)
        )

    def owned(self, session: Session, task_id: int) -> tuple[TaskScheduled, Conversation, Contact] | None:
        """The task, row-locked, if this worker still holds it; None when the lease was lost. Holding the returned
        conversation and contact keeps them in the session's (weak) identity map, so later checks do not reload."""
        row = session.execute(self._owned_query().where(TaskScheduled.id == task_id)).one_or_none()
        return None if row is None else (row[0], row[1], row[2])

    def owned_batch(self, session: Session, task_ids: list[int]) -> list[tuple[TaskScheduled, Conversation, Contact]]:
        """`owned` for a whole claimed batch in one round trip, oldest `run_at` first; lost tasks are left out."""
        query = self._owned_query().where(TaskScheduled.id.in_(task_ids)).order_by(TaskScheduled.run_at,
                                                                                   TaskScheduled.id)
        return [(row[0], row[1], row[2]) for row in session.execute(query)]

    def _fenced(self, task_ids: list[int]):  # noqa: ANN202 - a SQLAlchemy UPDATE
        return update(TaskScheduled).where(
            TaskScheduled.id.in_(task_ids),
            TaskScheduled.locked_by == self.worker_id,
            TaskScheduled.status == "running",
        ).execution_options(synchronize_session=False)

    def renew_many(self, task_ids: list[int]) -> None:
        """Extend the lease of tasks this worker still holds (a long batch must not lose them to another worker)."""
        if not task_ids:
            return
        with session_scope(self.engine) as session:
            session.execute(self._fenced(task_ids).values(lease_expires_at=now() + self.lease))

    def complete(self, task_id: int) -> bool:
        return self.complete_many([task_id]) == [task_id]

    def complete_many(self, task_ids: list[int]) -> list[int]:
        """Mark fired tasks done, in one statement; returns the ids this worker still held (the rest were lost)."""
        if not task_ids:
            return []
        values = {"status": "done", "lease_expires_at": None, "last_error": None, "updated_at": now()}
        with session_scope(self.engine) as session:
            if not self._sqlite:
                return list(session.execute(self._fenced(task_ids).values(**values).returning(TaskScheduled.id))
                            .scalars())
            # SQLAlchemy 1.4 has no RETURNING for SQLite; its single embedded worker settles task by task.
            return [task_id for task_id in task_ids
                    if session.execute(self._fenced([task_id]).values(**values)).rowcount == 1]

    def fail_or_retry(
        self, task_id: int, error: str, *, max_attempts: int, base_seconds: float, max_seconds: float
    ) -> str | None:
        """After a failed attempt: back to `pending` with backoff, or `failed` plus a dead letter after the last
        attempt. Returns the new status (None when the lease was lost)."""
        with session_scope(self.engine) as session:
            owned = self.owned(session, task_id)
            if owned is None:
                return None
            task = owned[0]
            return self.record_failure(session, task, error, max_attempts, base_seconds, max_seconds)

    @staticmethod
    def record_failure(
        session: Session, task: TaskScheduled, error: str, max_attempts: int, base_seconds: float, max_seconds: float
    ) -> str:
        task.last_error = error[:2000]
        task.lease_expires_at = None
        if task.attempts >= max_attempts:
            task.status = "failed"
            session.add(
                DeadLetter(kind="task", task_id=task.id, reason=error[:2000], attempts=task.attempts, created_at=now())
            )
            metrics.DEAD_LETTERS.labels(kind="task").inc()
            return "failed"
        task.status = "pending"
        task.locked_by = None
        task.run_at = now() + backoff(task.attempts, base_seconds, max_seconds)
        return "pending"

    def release(self, task_ids: list[int]) -> None:
        """Give back claimed tasks that were never fired (graceful shutdown): the attempt does not count."""
        if not task_ids:
            return
        with session_scope(self.engine) as session:
            session.execute(
                self._fenced(task_ids).values(
                    status="pending",
                    attempts=TaskScheduled.attempts - 1,
                    locked_by=None,
                    lease_expires_at=None,
                    updated_at=now(),
                )
            )

    def lag_seconds(self) -> float:
        """Age of the oldest due pending task (0 when none), for the `leadbot_task_lag_seconds` gauge."""
        with session_scope(self.engine) as session:
            current = now()
            oldest = session.execute(
                select(func.min(TaskScheduled.run_at)).where(
                    TaskScheduled.status == "pending", TaskScheduled.run_at <= current
                )
            ).scalar_one_or_none()
        if oldest is None:
            return 0.0
        if oldest.tzinfo is None:  # min() bypasses the column type's result processing
            oldest = oldest.replace(tzinfo=current.tzinfo)
        return max(0.0, (current - oldest).total_seconds())
