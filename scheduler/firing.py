"""What a claimed task does at fire time.

1. Under a row lock, re-check the cancellation rules (`leadbot.services.tasks.skip_reason`): the lead may have
   replied, booked, revoked consent, or a human may own the conversation since the task was scheduled.
   `handover_sla` is the exception: it runs `leadbot.services.handover.check_sla_task` in-process (no Rasa turn).
2. Trigger `EXTERNAL_<task_type>` with entity `task_id` through Rasa. No DB transaction is open during the HTTP
   call, because the Rasa action reads the task and writes the outbound message meanwhile.
3. Done on a 200; otherwise back to pending with exponential backoff, and after `TASK_MAX_ATTEMPTS` attempts
   `failed` plus a `DeadLetter(kind="task")`.

The policy gate is not consulted here: the message takes the normal outbound path (action → channel →
`outbound.enqueue`), where the gate runs at fire time with the then-current window, consent and quiet hours.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from leadbot import metrics
from leadbot.config import Settings, settings
from leadbot.db.models import TaskScheduled
from leadbot.db.session import session_scope
from leadbot.phone import sender_id_for
from leadbot.services import tasks as task_service
from scheduler.queue import TaskQueue
from scheduler.rasa_client import RasaClient, RasaError

log = logging.getLogger(__name__)


@dataclass
class FireStats:
    claimed: int = 0
    fired: int = 0
    skipped: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0
    released: int = 0
    by_type: dict[str, int] = field(default_factory=dict)

    def add(self, other: FireStats) -> None:
        for name in ("claimed", "fired", "skipped", "retried", "failed", "lost", "released"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, value in other.by_type.items():
            self.by_type[key] = self.by_type.get(key, 0) + value


@dataclass(frozen=True)
class _Trigger:
    task_id: int
    task_type: str
    sender_id: str


class Firer:
    """One scheduler worker: claims due tasks and fires them. `stop()` makes it finish the current task only."""

    def __init__(self, engine: Engine, rasa: RasaClient, worker_id: str, cfg: Settings | None = None) -> None:
        self.cfg = cfg or settings()
        self.queue = TaskQueue(engine, worker_id, self.cfg.task_lease_seconds)
        self.engine = engine
        self.rasa = rasa
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run_once(self, max_batches: int = 1000) -> FireStats:
        """Fire everything that is due now, batch by batch (the APScheduler job calls this every poll)."""
        total = FireStats()
        for _ in range(max_batches):
            if self._stopping.is_set():
                break
            batch = self.fire_batch()
            total.add(batch)
            if batch.claimed < self.cfg.scheduler_batch_size:
                break
        metrics.TASK_LAG.set(self.queue.lag_seconds())
        return total

    def fire_batch(self) -> FireStats:
        stats = FireStats()
        ids = self.queue.claim(self.cfg.scheduler_batch_size)
        stats.claimed = len(ids)
        for index, task_id in enumerate(ids):
            if self._stopping.is_set():
                rest = ids[index:]
                self.queue.release(rest)
                stats.released += len(rest)
                break
            self.fire(task_id, stats)
        return stats

    def fire(self, task_id: int, stats: FireStats) -> None:
        trigger = self._prepare(task_id, stats)
        if trigger is None:
            return
        try:
            self.rasa.trigger_intent(trigger.sender_id, f"EXTERNAL_{trigger.task_type}", {"task_id": str(task_id)})
        except (RasaError, ValueError) as exc:
            self._failed_attempt(trigger, str(exc), stats)
            return
        if self.queue.complete(task_id):
            stats.fired += 1
            stats.by_type[trigger.task_type] = stats.by_type.get(trigger.task_type, 0) + 1
            metrics.TASKS_FIRED.labels(task_type=trigger.task_type, outcome="fired").inc()
        else:
            # Fired, but another worker reclaimed the lease meanwhile (we were slower than TASK_LEASE_SECONDS).
            stats.lost += 1
            log.warning("task %s fired after its lease expired", task_id)

    def _prepare(self, task_id: int, stats: FireStats) -> _Trigger | None:
        """Re-check the task under its row lock; renew the lease for the HTTP call, or settle the task now."""
        with session_scope(self.engine) as session:
            owned = self.queue.owned(session, task_id)
            if owned is None:
                stats.lost += 1
                return None
            task, _conversation, contact = owned
            if task.attempts > self.cfg.task_max_attempts:
                # Reclaimed from crashed workers too often: a poison task must not crash-loop the fleet.
                # max_attempts=task.attempts makes record_failure fail it (with a dead letter) right away.
                self.queue.record_failure(session, task, "lease expired on every attempt", task.attempts, 0, 0)
                stats.failed += 1
                metrics.TASKS_FIRED.labels(task_type=task.task_type, outcome="failed").inc()
                return None
            if task.task_type == "handover_sla":
                self._check_handover_sla(session, task, stats)
                return None
            reason = task_service.skip_reason(session, task)
            if reason is not None:
                task_service.mark_cancelled(task, reason)
                stats.skipped += 1
                metrics.TASKS_FIRED.labels(task_type=task.task_type, outcome="skipped").inc()
                log.info("task %s (%s) not fired: %s", task.id, task.task_type, reason)
                return None
            self.queue.renew(task)
            return _Trigger(task.id, task.task_type, sender_id_for(contact.whatsapp_e164))

    def _check_handover_sla(self, session: Session, task: TaskScheduled, stats: FireStats) -> None:
        """The SLA check needs no Rasa turn (the bot is silent during a handover): run it in this transaction."""
        from leadbot.services import handover  # the ops API feature's module; imported only for this task type

        try:
            with session.begin_nested():
                handover.check_sla_task(session, task)
        except Exception as exc:  # any failure is one failed attempt, retried like a Rasa error
            status = self.queue.record_failure(
                session, task, f"{type(exc).__name__}: {exc}", self.cfg.task_max_attempts,
                self.cfg.task_backoff_base_seconds, self.cfg.task_backoff_max_seconds,
            )
            outcome = "failed" if status == "failed" else "retry"
            if status == "failed":
                stats.failed += 1
            else:
                stats.retried += 1
            metrics.TASKS_FIRED.labels(task_type=task.task_type, outcome=outcome).inc()
            log.exception("handover SLA task %s failed", task.id)
            return
        task.status = "done"
        task.lease_expires_at = None
        stats.fired += 1
        stats.by_type[task.task_type] = stats.by_type.get(task.task_type, 0) + 1
        metrics.TASKS_FIRED.labels(task_type=task.task_type, outcome="fired").inc()

    def _failed_attempt(self, trigger: _Trigger, error: str, stats: FireStats) -> None:
        status = self.queue.fail_or_retry(
            trigger.task_id,
            error,
            max_attempts=self.cfg.task_max_attempts,
            base_seconds=self.cfg.task_backoff_base_seconds,
            max_seconds=self.cfg.task_backoff_max_seconds,
        )
        if status == "failed":
            outcome, stats.failed = "failed", stats.failed + 1
        elif status == "pending":
            outcome, stats.retried = "retry", stats.retried + 1
        else:
            outcome, stats.lost = "lost", stats.lost + 1
        metrics.TASKS_FIRED.labels(task_type=trigger.task_type, outcome=outcome).inc()
        log.warning("task %s (%s) attempt failed (%s): %s", trigger.task_id, trigger.task_type, outcome, error)
