"""What a claimed batch of tasks does at fire time.

1. Under row locks, re-check the cancellation rules (`leadbot.services.tasks.skip_reason`): the lead may have
   replied, booked, revoked consent, or a human may own the conversation since the task was scheduled.
   `handover_sla` is the exception: it runs `leadbot.services.handover.check_sla_task` in-process (no Rasa turn).
   The whole batch is checked in one transaction; if that fails, task by task, so one bad task cannot hold back
   its batch-mates.
2. Trigger `EXTERNAL_<task_type>` with entity `task_id` through Rasa. No DB transaction is open during the HTTP
   call, because the Rasa action reads the task and writes the outbound message meanwhile. Up to
   `SCHEDULER_FIRE_CONCURRENCY` triggers are in flight at once, each for a different conversation; one
   conversation's tasks go one after another, oldest first. The batch's leases are renewed before half of them
   has run out.
3. Done on a 200 (one fenced UPDATE for the batch); otherwise back to pending with exponential backoff, and after
   `TASK_MAX_ATTEMPTS` attempts `failed` plus a `DeadLetter(kind="task")`.

The policy gate is not consulted here: the message takes the normal outbound path (action → channel →
`outbound.enqueue`), where the gate runs at fire time with the then-current window, consent and quiet hours.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from leadbot import metrics
from leadbot.clock import now
from leadbot.config import Settings, settings
from leadbot.db.models import Appointment, TaskScheduled
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


@dataclass
class _Flight:
    """A batch's triggers while they are in flight: what came back, and when the leases need renewing."""

    task_ids: list[int]
    renew_at: datetime
    fired: list[_Trigger] = field(default_factory=list)
    failed: list[tuple[_Trigger, str]] = field(default_factory=list)
    unstarted: list[_Trigger] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Firer:
    """One scheduler worker: claims due tasks and fires them. `stop()` lets the triggers in flight finish and gives
    the rest of the batch back."""

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
        # Before the claim: a lower bound of the lease the claim sets.
        claimed_at = now()
        ids = self.queue.claim(self.cfg.scheduler_batch_size)
        stats.claimed = len(ids)
        if not ids:
            return stats
        if self._stopping.is_set():
            self.queue.release(ids)
            stats.released = len(ids)
            return stats
        triggers = self._prepare_all(ids, stats)
        if triggers:
            flight = _Flight([t.task_id for t in triggers], renew_at=claimed_at + self.queue.lease / 2)
            try:
                self._fire_all(triggers, flight)
            finally:
                self._settle(flight, stats)
        return stats

    # --- 1. Fire-time checks ---------------------------------------------------------------------------------

    def _prepare_all(self, ids: list[int], stats: FireStats) -> list[_Trigger]:
        try:
            return self._prepare(ids, stats)
        except Exception as exc:  # any failure: isolate the culprit instead of stalling the batch until its lease ends
            if len(ids) == 1:
                self._check_failed(ids[0], exc, stats)
                return []
            log.exception("fire-time checks failed for a batch of %d tasks; checking them one by one", len(ids))
        triggers = []
        for task_id in ids:
            try:
                triggers += self._prepare([task_id], stats)
            except Exception as exc:  # recorded as a failed attempt of this task alone
                self._check_failed(task_id, exc, stats)
        return triggers

    def _check_failed(self, task_id: int, exc: Exception, stats: FireStats) -> None:
        """A task whose fire-time check raised: one failed attempt, retried with backoff like a Rasa error (and
        dead-lettered after the last one), so a poison task cannot crash-loop."""
        log.error("fire-time check of task %s failed", task_id, exc_info=exc)
        self._failed_attempt(_Trigger(task_id, "unknown", ""), f"{type(exc).__name__}: {exc}", stats)

    def _prepare(self, ids: list[int], stats: FireStats) -> list[_Trigger]:
        """Re-check the tasks under their row locks in one transaction; settle the ones that do not fire now.
        Stats and metrics are counted only once that transaction has committed."""
        local = FireStats()
        outcomes: list[tuple[str, str]] = []
        triggers = []
        with session_scope(self.engine) as session:
            owned = self.queue.owned_batch(session, ids)
            local.lost = len(ids) - len(owned)
            # Reminders compare with their appointment: load those in one round trip; holding the list keeps them
            # in the session's (weak) identity map, where `skip_reason`'s `session.get` finds them.
            appointment_ids = {task.appointment_id for task, _, _ in owned if task.appointment_id is not None}
            _appointments = (
                session.execute(select(Appointment).where(Appointment.id.in_(appointment_ids))).scalars().all()
                if appointment_ids else []
            )
            for task, _conversation, contact in owned:
                if task.attempts > self.cfg.task_max_attempts:
                    # Reclaimed from crashed workers too often: a poison task must not crash-loop the fleet.
                    # max_attempts=task.attempts makes record_failure fail it (with a dead letter) right away.
                    self.queue.record_failure(session, task, "lease expired on every attempt", task.attempts, 0, 0)
                    local.failed += 1
                    outcomes.append((task.task_type, "failed"))
                elif task.task_type == "handover_sla":
                    outcomes.append((task.task_type, self._check_handover_sla(session, task, local)))
                elif (reason := task_service.skip_reason(session, task)) is not None:
                    task_service.mark_cancelled(task, reason)
                    local.skipped += 1
                    outcomes.append((task.task_type, "skipped"))
                    log.info("task %s (%s) not fired: %s", task.id, task.task_type, reason)
                else:
                    triggers.append(_Trigger(task.id, task.task_type, sender_id_for(contact.whatsapp_e164)))
        stats.add(local)
        for task_type, outcome in outcomes:
            metrics.TASKS_FIRED.labels(task_type=task_type, outcome=outcome).inc()
        return triggers

    def _check_handover_sla(self, session: Session, task: TaskScheduled, stats: FireStats) -> str:
        """The SLA check needs no Rasa turn (the bot is silent during a handover): run it in this transaction.
        Returns the metrics outcome."""
        from leadbot.services import handover  # the ops API feature's module; imported only for this task type

        try:
            with session.begin_nested():
                handover.check_sla_task(session, task)
        except Exception as exc:  # any failure is one failed attempt, retried like a Rasa error
            status = self.queue.record_failure(
                session, task, f"{type(exc).__name__}: {exc}", self.cfg.task_max_attempts,
                self.cfg.task_backoff_base_seconds, self.cfg.task_backoff_max_seconds,
            )
            log.exception("handover SLA task %s failed", task.id)
            if status == "failed":
                stats.failed += 1
                return "failed"
            stats.retried += 1
            return "retry"
        task.status = "done"
        task.lease_expires_at = None
        stats.fired += 1
        stats.by_type[task.task_type] = stats.by_type.get(task.task_type, 0) + 1
        return "fired"

    # --- 2. Triggers -----------------------------------------------------------------------------------------

    def _fire_all(self, triggers: list[_Trigger], flight: _Flight) -> None:
        by_conversation: dict[str, list[_Trigger]] = {}
        for trigger in triggers:  # already oldest first
            by_conversation.setdefault(trigger.sender_id, []).append(trigger)
        groups = list(by_conversation.values())
        workers = min(self.cfg.scheduler_fire_concurrency, len(groups))
        if workers == 1:
            for group in groups:
                self._fire_group(group, flight)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fire") as pool:
            futures = [pool.submit(self._fire_group, group, flight) for group in groups]
        for future in futures:
            future.result()  # re-raises an unexpected error of a trigger (after the whole batch has run)

    def _fire_group(self, group: list[_Trigger], flight: _Flight) -> None:
        for trigger in group:
            if self._stopping.is_set():
                with flight.lock:
                    flight.unstarted.append(trigger)
                continue
            self._keep_leases(flight)
            try:
                self.rasa.trigger_intent(trigger.sender_id, f"EXTERNAL_{trigger.task_type}",
                                         {"task_id": str(trigger.task_id)})
            except (RasaError, ValueError) as exc:
                with flight.lock:
                    flight.failed.append((trigger, str(exc)))
                continue
            with flight.lock:
                flight.fired.append(trigger)

    def _keep_leases(self, flight: _Flight) -> None:
        """Before a trigger: renew the batch's leases once less than half is left, so the tasks fired but not yet
        marked done cannot be reclaimed (and fired again) by another worker."""
        with flight.lock:
            current = now()
            if current < flight.renew_at:
                return
            self.queue.renew_many(flight.task_ids)
            flight.renew_at = current + self.queue.lease / 2

    # --- 3. Settling -----------------------------------------------------------------------------------------

    def _settle(self, flight: _Flight, stats: FireStats) -> None:
        """Also runs when a trigger raised unexpectedly: whatever did fire is marked done."""
        done = set(self.queue.complete_many([t.task_id for t in flight.fired]))
        for trigger in flight.fired:
            if trigger.task_id in done:
                stats.fired += 1
                stats.by_type[trigger.task_type] = stats.by_type.get(trigger.task_type, 0) + 1
                metrics.TASKS_FIRED.labels(task_type=trigger.task_type, outcome="fired").inc()
            else:
                # Fired, but another worker reclaimed the lease meanwhile (we were slower than TASK_LEASE_SECONDS).
                stats.lost += 1
                log.warning("task %s fired after its lease expired", trigger.task_id)
        for trigger, error in flight.failed:
            self._failed_attempt(trigger, error, stats)
        if flight.unstarted:
            self.queue.release([t.task_id for t in flight.unstarted])
            stats.released += len(flight.unstarted)

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
