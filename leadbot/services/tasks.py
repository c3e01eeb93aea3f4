"""Scheduled tasks (seed §3 `tasks_scheduled`): scheduling, cancellation rules, and what a task sends.

Pure DB logic, no HTTP: the dialogue, booking, consent and handover features call the hooks below inside their
own unit of work, so a task is created or cancelled atomically with the change that causes it. The scheduler
process (`scheduler/`) claims due rows and fires them through Rasa's trigger_intent API; the Rasa action
`action_send_scheduled_template` then asks `scheduled_message(...)` what to send.

Cancellation rules (issue 5 point 3), all recorded in `payload_json["cancel_reason"]`:
- a lead reply cancels the pending nudge (`after_lead_message`); a new question replaces it (`after_bot_turn`);
- a booking cancels the booking follow-ups (`on_booked`); cancelling or moving an appointment removes or moves its
  reminders (`on_appointment_cancelled`, `on_appointment_moved`);
- revoked consent cancels every marketing task (`on_consent_revoked`);
- a handover pauses the bot's tasks: they become `cancelled` with reason `handover_paused` (the status enum is the
  seed's, so "paused" is a reason, not a status). `on_handed_back` revives the paused tasks that are still in the
  future; ones that fell due during the handover stay cancelled (`missed_during_handover`), because the human
  talked to the lead meanwhile and a late "in 55 Minuten geht's los" would be wrong.
The scheduler checks the same conditions again at fire time (`skip_reason`), so a hook that was not called (or a
race with an inbound message) cannot make a stale task fire.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadbot.clock import now
from leadbot.config import settings
from leadbot.db.models import TASK_TYPES, Appointment, Contact, Conversation, TaskScheduled
from leadbot.domain.policy import next_allowed_time
from leadbot.services.outbound import policy_config, queue_tail

NUDGE = "nudge_30m"
FOLLOWUPS = ("followup_24h", "followup_48h")
REMINDERS = ("reminder_22h", "reminder_55m", "reminder_5m")
# Everything the bot sends unprompted; `handover_sla` is an internal check and never messages the lead.
MARKETING_TASK_TYPES = ("welcome", NUDGE, *FOLLOWUPS, *REMINDERS)
# Bot follow-ups that a handover pauses (the SLA check is what the handover itself needs, so it keeps running).
PAUSABLE_TASK_TYPES = MARKETING_TASK_TYPES
# Only the qualification and booking flows ask questions worth nudging.
FLOW_STATUSES = ("open", "qualified")
ACTIVE_APPOINTMENT_STATUSES = ("booked", "rescheduled")

PAUSED = "handover_paused"

TEMPLATES = {
    "welcome": "lead_welcome_v1",
    "nudge_30m": "lead_nudge_v1",
    "followup_24h": "lead_followup_24h_v1",
    "followup_48h": "lead_followup_48h_v1",
    "reminder_22h": "appointment_reminder_22h_v1",
    "reminder_55m": "appointment_reminder_55m_v1",
    "reminder_5m": "appointment_reminder_5m_v1",
}
# Salutation when the opt-in form gave no first name: "Hey du, danke für deine Anfrage" still reads naturally.
FIRST_NAME_FALLBACK = "du"


def reminder_offsets() -> dict[str, timedelta]:
    cfg = settings()
    return {
        "reminder_22h": timedelta(seconds=cfg.reminder_22h_before_seconds),
        "reminder_55m": timedelta(seconds=cfg.reminder_55m_before_seconds),
        "reminder_5m": timedelta(seconds=cfg.reminder_5m_before_seconds),
    }


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def find_by_dedupe_key(session: Session, dedupe_key: str) -> TaskScheduled | None:
    return session.execute(select(TaskScheduled).where(TaskScheduled.dedupe_key == dedupe_key)).scalar_one_or_none()


def schedule(
    session: Session,
    conversation: Conversation,
    task_type: str,
    run_at: datetime,
    payload: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    appointment_id: int | None = None,
) -> TaskScheduled:
    """Create a pending task. With a `dedupe_key` the call is idempotent: the existing task (in any status) is
    returned, also when a concurrent transaction inserted it first (unique constraint `uq_tasks_dedupe_key`)."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task type: {task_type}")
    if run_at.tzinfo is None:
        raise ValueError("run_at must be an aware datetime")
    if dedupe_key is not None:
        existing = find_by_dedupe_key(session, dedupe_key)
        if existing is not None:
            return existing
    current = now()
    task = TaskScheduled(
        conversation_id=conversation.id,
        task_type=task_type,
        run_at=run_at,
        payload_json=payload or None,
        status="pending",
        attempts=0,
        dedupe_key=dedupe_key,
        appointment_id=appointment_id,
        created_at=current,
        updated_at=current,
    )
    try:
        with session.begin_nested():
            session.add(task)
    except IntegrityError:
        if dedupe_key is None:
            raise
        winner = find_by_dedupe_key(session, dedupe_key)
        if winner is None:
            raise
        return winner
    return task


def mark_cancelled(task: TaskScheduled, reason: str) -> None:
    """Cancel one task (also used by the scheduler for a fire-time skip); `handover_paused` makes it revivable."""
    task.status = "cancelled"
    task.lease_expires_at = None
    task.locked_by = None
    # Reassign (not mutate) the JSON so SQLAlchemy sees the change.
    task.payload_json = {**(task.payload_json or {}), "cancel_reason": reason, "cancelled_at": now().isoformat()}


def _pending(session: Session, *criteria: Any) -> list[TaskScheduled]:
    # Row locks serialise us with a worker's fire-time update; the worker claims with SKIP LOCKED, so no deadlock.
    query = select(TaskScheduled).where(TaskScheduled.status == "pending", *criteria).with_for_update()
    return list(session.execute(query).scalars())


def cancel(session: Session, conversation_id: int, task_types: Iterable[str], reason: str) -> int:
    """Cancel the conversation's pending tasks of these types; returns how many were cancelled."""
    types = tuple(task_types)
    tasks = _pending(session, TaskScheduled.conversation_id == conversation_id, TaskScheduled.task_type.in_(types))
    for task in tasks:
        mark_cancelled(task, reason)
    session.flush()
    return len(tasks)


def _has_upcoming_appointment(session: Session, conversation_id: int) -> bool:
    return (
        session.execute(
            select(Appointment.id)
            .where(
                Appointment.conversation_id == conversation_id,
                Appointment.status.in_(ACTIVE_APPOINTMENT_STATUSES),
                Appointment.starts_at > now(),
            )
            .limit(1)
        ).first()
        is not None
    )


# --- Hooks for the other features ----------------------------------------------------------------------------


def after_lead_message(session: Session, conversation: Conversation) -> int:
    """The lead wrote: the nudge for the previous question is moot."""
    return cancel(session, conversation.id, [NUDGE], "lead_replied")


def after_bot_turn(session: Session, conversation: Conversation, asked_question: bool) -> TaskScheduled | None:
    """After the bot asked a question, nudge in 30 min if there is no reply; the newest question replaces an older
    pending nudge. Only in the qualification/booking flow, while the bot owns the conversation."""
    if not asked_question:
        return None
    contact = conversation.contact
    if conversation.owner != "bot" or conversation.status not in FLOW_STATUSES:
        return None
    if contact is not None and contact.consent_status == "revoked":
        return None
    if _has_upcoming_appointment(session, conversation.id):
        return None
    return _schedule_nudge(session, conversation, timedelta(seconds=settings().nudge_delay_seconds))


def after_later_in_questions(session: Session, conversation: Conversation) -> TaskScheduled:
    """"Später" to an open qualification question: no 30-minute nudge, but one reminder of the question after the
    follow-up delay (24 h by default), so the lead is not lost; any reply before then cancels it."""
    return _schedule_nudge(session, conversation, timedelta(seconds=settings().followup_24h_delay_seconds))


def _schedule_nudge(session: Session, conversation: Conversation, delay: timedelta) -> TaskScheduled:
    contact = conversation.contact
    cancel(session, conversation.id, [NUDGE], "replaced_by_newer_question")
    current = now()
    # The delay counts from when the question reaches the lead: quiet hours (or a reply delay) may hold the
    # turn's messages back, and asked at 23:30 it goes out at 07:00, so the nudge must not follow it seconds later.
    # Nor may the nudge fall due in quiet hours itself: fired there, its message would wait in the queue for the
    # morning and go out even after the lead answered at night (a reply cancels only a nudge still pending).
    asked_at = max(current, queue_tail(session, conversation.id) or current)
    run_at = next_allowed_time(asked_at + delay, (contact.timezone if contact else None) or "Europe/Berlin",
                               policy_config())
    # Keyed by the turn's time to the microsecond: a later question gets its own nudge, also one asked within the
    # same second (two quick turns) or at night with both nudges falling due at the same morning minute.
    key = f"{NUDGE}:c{conversation.id}:{int((current + delay).timestamp() * 1_000_000)}"
    return schedule(session, conversation, NUDGE, run_at, dedupe_key=key)


def on_qualified(session: Session, conversation: Conversation) -> list[TaskScheduled]:
    """Qualified but not booked yet: follow up after 24 h and 48 h (once per conversation)."""
    if _has_upcoming_appointment(session, conversation.id):
        return []
    cfg = settings()
    delays = {
        "followup_24h": timedelta(seconds=cfg.followup_24h_delay_seconds),
        "followup_48h": timedelta(seconds=cfg.followup_48h_delay_seconds),
    }
    current = now()
    return [
        schedule(session, conversation, task_type, current + delay, dedupe_key=f"{task_type}:c{conversation.id}")
        for task_type, delay in delays.items()
    ]


def on_consent_revoked(session: Session, conversation: Conversation) -> int:
    """Revoked consent cancels every marketing task, also the ones paused by a handover (so a hand-back cannot
    revive them)."""
    count = cancel(session, conversation.id, MARKETING_TASK_TYPES, "consent_revoked")
    for task in _paused(session, conversation.id):
        mark_cancelled(task, "consent_revoked")
        count += 1
    session.flush()
    return count


def on_handover_started(session: Session, conversation: Conversation) -> int:
    """A human takes over: pause the bot's pending tasks (status `cancelled`, reason `handover_paused`)."""
    return cancel(session, conversation.id, PAUSABLE_TASK_TYPES, PAUSED)


def _paused(session: Session, conversation_id: int) -> list[TaskScheduled]:
    candidates = session.execute(
        select(TaskScheduled)
        .where(TaskScheduled.conversation_id == conversation_id, TaskScheduled.status == "cancelled")
        .with_for_update()
    ).scalars()
    return [task for task in candidates if (task.payload_json or {}).get("cancel_reason") == PAUSED]


def on_handed_back(session: Session, conversation: Conversation) -> list[TaskScheduled]:
    """The bot owns the conversation again: revive paused tasks that are still in the future."""
    current = now()
    revived = []
    for task in _paused(session, conversation.id):
        if task.run_at > current:
            payload = dict(task.payload_json or {})
            payload.pop("cancel_reason", None)
            payload.pop("cancelled_at", None)
            task.payload_json = {**payload, "resumed_at": current.isoformat()}
            task.status = "pending"
            revived.append(task)
        else:
            mark_cancelled(task, "missed_during_handover")
    session.flush()
    return revived


def on_booked(session: Session, conversation: Conversation, appointment: Appointment) -> list[TaskScheduled]:
    """Booked: the booking follow-ups and the nudge are moot; remind 22 h, 55 min and 5 min before the start."""
    cancel(session, conversation.id, [*FOLLOWUPS, NUDGE], "booked")
    return _schedule_reminders(session, conversation, appointment)


def _schedule_reminders(
    session: Session, conversation: Conversation, appointment: Appointment
) -> list[TaskScheduled]:
    current = now()
    starts_at = appointment.starts_at
    created = []
    for task_type, offset in reminder_offsets().items():
        run_at = starts_at - offset
        # A reminder whose moment has passed (booked at short notice) would say the wrong thing; skip it.
        if run_at <= current:
            continue
        created.append(
            schedule(
                session,
                conversation,
                task_type,
                run_at,
                payload={"starts_at": starts_at.isoformat(), "deadline": starts_at.isoformat()},
                # Keyed by the start time: moving the appointment yields new reminders, re-booking the same is a no-op.
                dedupe_key=f"{task_type}:a{appointment.id}:{_epoch(starts_at)}",
                appointment_id=appointment.id,
            )
        )
    return created


def on_appointment_cancelled(session: Session, appointment: Appointment) -> int:
    tasks = _pending(session, TaskScheduled.appointment_id == appointment.id)
    for task in tasks:
        mark_cancelled(task, "appointment_cancelled")
    session.flush()
    return len(tasks)


def on_appointment_moved(session: Session, appointment: Appointment) -> list[TaskScheduled]:
    """The appointment row's `starts_at` changed: drop its old reminders, schedule new ones. (A booking feature
    that creates a new row for a reschedule calls `on_appointment_cancelled(old)` and `on_booked(new)` instead.)"""
    for task in _pending(session, TaskScheduled.appointment_id == appointment.id):
        mark_cancelled(task, "appointment_moved")
    session.flush()
    conversation = session.get(Conversation, appointment.conversation_id)
    return _schedule_reminders(session, conversation, appointment)


# --- Fire time -----------------------------------------------------------------------------------------------


def skip_reason(session: Session, task: TaskScheduled) -> str | None:
    """Why a due task must not fire now (None: fire it). Re-checks the cancellation rules at fire time."""
    conversation = session.get(Conversation, task.conversation_id)
    if conversation is None:
        return "conversation_gone"
    contact: Contact = conversation.contact
    if task.task_type == "handover_sla":
        return None
    if task.task_type in MARKETING_TASK_TYPES and contact.consent_status == "revoked":
        return "consent_revoked"
    if conversation.owner == "human":
        return PAUSED
    if task.task_type == NUDGE:
        if conversation.last_inbound_at is not None and conversation.last_inbound_at >= task.created_at:
            return "lead_replied"
        if conversation.status not in FLOW_STATUSES:
            return f"conversation_{conversation.status}"
    if task.task_type in FOLLOWUPS:
        if _has_upcoming_appointment(session, conversation.id):
            return "booked"
        if conversation.status != "qualified":
            return f"conversation_{conversation.status}"
    if task.task_type in REMINDERS:
        appointment = session.get(Appointment, task.appointment_id) if task.appointment_id else None
        if appointment is None or appointment.status not in ACTIVE_APPOINTMENT_STATUSES:
            return "appointment_cancelled"
        if (task.payload_json or {}).get("starts_at") != appointment.starts_at.isoformat():
            return "appointment_moved"
        if appointment.starts_at <= now():
            return "appointment_started"
    return None


@dataclass(frozen=True)
class ScheduledMessage:
    """What the Rasa action sends for a task: the channel passes it on to `outbound.enqueue`."""

    template: str
    variables: dict[str, str]
    deadline: datetime | None
    purpose: str = "marketing"

    def json_message(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "variables": self.variables,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "purpose": self.purpose,
        }


def scheduled_message(session: Session, task: TaskScheduled) -> ScheduledMessage | None:
    """The seed template (§5) for a task with its variables; None when the task has nothing to send."""
    template = TEMPLATES.get(task.task_type)
    if template is None:
        return None
    conversation = session.get(Conversation, task.conversation_id)
    contact: Contact = conversation.contact
    first_name = (contact.first_name or "").strip() or FIRST_NAME_FALLBACK
    if task.task_type in ("welcome", "followup_24h"):
        return ScheduledMessage(template, {"first_name": first_name}, None)
    if task.task_type in ("nudge_30m", "followup_48h"):
        return ScheduledMessage(template, {}, None)
    appointment = session.get(Appointment, task.appointment_id) if task.appointment_id else None
    if appointment is None:
        return None
    deadline = appointment.starts_at
    if task.task_type == "reminder_22h":
        local = appointment.starts_at.astimezone(ZoneInfo(contact.timezone or "Europe/Berlin"))
        return ScheduledMessage(template, {"time": local.strftime("%H:%M")}, deadline)
    if task.task_type == "reminder_55m":
        if not appointment.meeting_link:
            return None
        return ScheduledMessage(template, {"meeting_link": appointment.meeting_link}, deadline)
    return ScheduledMessage(template, {}, deadline)


def message_for_fire(session: Session, task_id: int, task_type: str | None = None) -> ScheduledMessage | None:
    """For the Rasa action: the message to send for a fired task, at most once per task.

    A retried trigger (Rasa processed the first one but the scheduler saw a timeout) must not send twice, so the
    first call marks the task (`payload_json["sent_at"]`) under a row lock in the caller's transaction. A duplicate
    WhatsApp template costs more trust than a missing nudge, hence at-most-once here."""
    # Conversation and contact in the same round trip; the local references keep them in the identity map.
    query = (
        select(TaskScheduled, Conversation, Contact)
        .join(Conversation, Conversation.id == TaskScheduled.conversation_id)
        .join(Contact, Contact.id == Conversation.contact_id)
        .where(TaskScheduled.id == task_id)
        .with_for_update(of=TaskScheduled)
    )
    row = session.execute(query).one_or_none()
    task, _conversation, _contact = row if row is not None else (None, None, None)
    if task is None or task.status in ("cancelled", "failed") or (task.payload_json or {}).get("sent_at"):
        return None
    if task_type is not None and task.task_type != task_type:  # an intent that does not match its task_id
        return None
    # The scheduler checked before firing, but the lead may have answered since (a reply cancels the nudge).
    if skip_reason(session, task) is not None:
        return None
    message = scheduled_message(session, task)
    if message is not None:
        task.payload_json = {**(task.payload_json or {}), "sent_at": now().isoformat()}
        session.flush()
    return message
