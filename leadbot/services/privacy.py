"""DSGVO operations on one contact: export everything, delete everywhere, revoke consent (issue 6 points 7-9).

Where a contact's personal data lives:
- our database: `contacts` and, through `conversations` (ON DELETE CASCADE), `messages`, `qualification_answers`,
  `tasks_scheduled`, `appointments`, `handovers`, `knowledge_gaps`, `dead_letters` (via message/task/outbox);
  `audit_events` and `crm_outbox` carry the contact id without a foreign key and are deleted explicitly;
- Rasa's SQL tracker store (`RASA_TRACKER_URL`, a separate database): the `events` rows of the sender id
  `wa<digits>`; Rasa has no API to delete a tracker, so we delete the rows;
- the Rasa lock store (`RASA_LOCK_URL`, Redis): `leadbot:lock:<sender id>`;
- the CRM: a `delete_contact` outbox row asks the CRM adapter to delete it there;
- the calendar: booked calls are events whose summary/description name the lead; they are deleted.

Delete is ordered so that every failure leaves a retryable state and never a half-deleted contact:
1. In our transaction, lock the contact row (the inbound path locks the same row, so no new inbound message of this
   contact can be persisted meanwhile) and refuse (`TurnInFlight`) while a turn is in flight: an inbound message not
   yet processed, a task being fired, or a held Rasa lock.
2. Delete our rows (flushed, not yet committed) and add the `delete_contact` outbox row and the PII-free
   `data_deleted` audit record.
3. Delete the tracker events (separate database, own commit) and the calendar events of the contact's
   appointments. If this fails (`StoreUnavailable`), step 2 rolls back: our rows are untouched and the request can
   simply be repeated (both deletions are idempotent).
4. Commit our transaction. If this fails, the tracker rows are gone but the contact still exists: repeating the
   request deletes the rest (tracker deletion is idempotent).
5. Sweep the tracker and the lock key once more: a Rasa turn that was already past our in-flight check (e.g. a
   trigger_intent from the scheduler) cannot leave events behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from leadbot import phone
from leadbot.clock import now as clock_now
from leadbot.config import settings
from leadbot.db.models import (
    Appointment,
    AuditEvent,
    Base,
    Contact,
    Conversation,
    CrmOutbox,
    DeadLetter,
    Handover,
    KnowledgeGap,
    Message,
    QualificationAnswer,
    TaskScheduled,
)
from leadbot.db.session import create_db_engine
from leadbot.services import audit, crm_outbox

logger = logging.getLogger(__name__)

LOCK_KEY_PREFIX = "leadbot:lock:"  # the key `leadbot.rasa_stores.AtomicLockStore` keeps Rasa's ticket lock under
_TRACKER_COLUMNS = ("id", "sender_id", "type_name", "timestamp", "intent_name", "action_name", "data")


class TurnInFlight(RuntimeError):
    """A dialogue turn (or a scheduled task) for this contact is running; deleting now could leave data behind."""


class StoreUnavailable(RuntimeError):
    """Rasa's tracker database or lock store cannot be reached: nothing was exported or deleted; retry later."""


@contextlib.contextmanager
def _rasa_store(what: str) -> Iterator[None]:
    import redis

    try:
        yield
    except (sa.exc.SQLAlchemyError, redis.RedisError) as exc:
        raise StoreUnavailable(f"{what} unreachable: {type(exc).__name__}") from exc


# --- Rasa's stores ---------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _tracker_engine(url: str) -> Engine:
    return create_db_engine(url)


def tracker_engine() -> Engine | None:
    url = settings().rasa_tracker_url
    return _tracker_engine(url) if url else None


def _events_table(engine: Engine) -> sa.Table | None:
    """Rasa's `events` table, or None when Rasa has not created it yet (no conversation ever ran)."""
    if not sa.inspect(engine).has_table("events"):
        return None
    return sa.Table("events", sa.MetaData(), autoload_with=engine)


def tracker_events(sender_id: str) -> list[dict[str, Any]]:
    with _rasa_store("Rasa tracker database"):
        return _tracker_events(sender_id)


def _tracker_events(sender_id: str) -> list[dict[str, Any]]:
    engine = tracker_engine()
    table = _events_table(engine) if engine is not None else None
    if table is None:
        return []
    with engine.connect() as connection:
        rows = connection.execute(
            select(*(table.c[name] for name in _TRACKER_COLUMNS))
            .where(table.c.sender_id == sender_id)
            .order_by(table.c.id)
        ).mappings()
        events = []
        for row in rows:
            event = dict(row)
            # Rasa stores each event's full JSON in `data`; export it as JSON, not as a string inside JSON.
            with contextlib.suppress(ValueError):
                event["data"] = json.loads(event["data"]) if event["data"] else None
            events.append(event)
        return events


def delete_tracker_events(sender_id: str) -> int:
    with _rasa_store("Rasa tracker database"):
        engine = tracker_engine()
        table = _events_table(engine) if engine is not None else None
        if table is None:
            return 0
        with engine.begin() as connection:
            return connection.execute(sa.delete(table).where(table.c.sender_id == sender_id)).rowcount or 0


def _lock_store() -> Any:
    url = settings().rasa_lock_url
    if not url:
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=5)


def rasa_lock_held(sender_id: str) -> bool:
    """True while Rasa's ticket lock for this sender has a ticket that has not expired (a turn is running)."""
    store = _lock_store()
    if store is None:
        return False
    with _rasa_store("Rasa lock store"):
        raw = store.get(LOCK_KEY_PREFIX + sender_id)
    if not raw:
        return False
    # Rasa's TicketLock: {"conversation_id": ..., "tickets": ["{\"number\": 1, \"expires\": <unix time>}", ...]},
    # expiry in real time (Rasa uses time.time(), not our injectable clock).
    tickets = [json.loads(ticket) for ticket in json.loads(raw).get("tickets") or []]
    return any(float(ticket["expires"]) > time.time() for ticket in tickets)


def delete_rasa_lock(sender_id: str) -> None:
    store = _lock_store()
    if store is not None:
        with _rasa_store("Rasa lock store"):
            store.delete(LOCK_KEY_PREFIX + sender_id)


# --- Export ----------------------------------------------------------------------------------------------


def _row(obj: Base) -> dict[str, Any]:
    """All columns of a row under their column names (the seed's field names), datetimes in ISO 8601."""
    out: dict[str, Any] = {}
    for column in obj.__table__.columns:
        value = getattr(obj, column.key)
        out[column.name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _rows(session: Session, model: type[Base], *criteria: Any) -> list[dict[str, Any]]:
    return [_row(obj) for obj in session.execute(select(model).where(*criteria).order_by(model.id)).scalars()]


def export(session: Session, contact: Contact) -> dict[str, Any]:
    """Everything stored about a contact, keyed by table name (writes `data_exported`; the caller commits)."""
    conversation_ids = list(
        session.execute(select(Conversation.id).where(Conversation.contact_id == contact.id)).scalars()
    )
    in_conversations = (Conversation.id.in_(conversation_ids),)
    message_ids = select(Message.id).where(Message.conversation_id.in_(conversation_ids))
    task_ids = select(TaskScheduled.id).where(TaskScheduled.conversation_id.in_(conversation_ids))
    outbox_ids = select(CrmOutbox.id).where(CrmOutbox.contact_id == contact.id)
    sender_id = phone.sender_id_for(contact.whatsapp_e164)
    data: dict[str, Any] = {
        "contacts": [_row(contact)],
        "conversations": _rows(session, Conversation, *in_conversations),
        "messages": _rows(session, Message, Message.conversation_id.in_(conversation_ids)),
        "qualification_answers": _rows(
            session, QualificationAnswer, QualificationAnswer.conversation_id.in_(conversation_ids)
        ),
        "tasks_scheduled": _rows(session, TaskScheduled, TaskScheduled.conversation_id.in_(conversation_ids)),
        "audit_events": _rows(session, AuditEvent, AuditEvent.contact_id == contact.id),
        "appointments": _rows(session, Appointment, Appointment.conversation_id.in_(conversation_ids)),
        "handovers": _rows(session, Handover, Handover.conversation_id.in_(conversation_ids)),
        "knowledge_gaps": _rows(session, KnowledgeGap, KnowledgeGap.conversation_id.in_(conversation_ids)),
        "crm_outbox": _rows(session, CrmOutbox, CrmOutbox.contact_id == contact.id),
        "dead_letters": _rows(
            session,
            DeadLetter,
            sa.or_(
                DeadLetter.message_id.in_(message_ids),
                DeadLetter.task_id.in_(task_ids),
                DeadLetter.outbox_id.in_(outbox_ids),
            ),
        ),
        "rasa_tracker_events": {"sender_id": sender_id, "events": tracker_events(sender_id)},
    }
    audit.record(session, contact.id, "data_exported", tables=sorted(key for key in data if key != "contacts"))
    return data


# --- Delete ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletionReport:
    contact_id: int
    deleted: dict[str, int]
    tracker_events_deleted: int
    audit_event_id: int


def _count(session: Session, model: type[Base], *criteria: Any) -> int:
    return session.execute(select(sa.func.count()).select_from(model).where(*criteria)).scalar_one()


def ensure_no_turn_in_flight(session: Session, contact: Contact, conversation_ids: Iterable[int]) -> None:
    conversation_ids = list(conversation_ids)
    unprocessed = _count(
        session,
        Message,
        Message.conversation_id.in_(conversation_ids),
        Message.direction == "inbound",
        Message.processed_at.is_(None),
    )
    running = _count(
        session,
        TaskScheduled,
        TaskScheduled.conversation_id.in_(conversation_ids),
        TaskScheduled.status == "running",
        sa.or_(TaskScheduled.lease_expires_at.is_(None), TaskScheduled.lease_expires_at > clock_now()),
    )
    if unprocessed or running:
        raise TurnInFlight("a message or task of this contact is being processed; retry in a few seconds")
    if rasa_lock_held(phone.sender_id_for(contact.whatsapp_e164)):
        raise TurnInFlight("Rasa is running a turn for this contact; retry in a few seconds")


def delete_calendar_events(uids: list[str]) -> int:
    """Delete the calendar events of booked calls (they name the lead); an already deleted event is fine."""
    if not uids:
        return 0
    from leadbot.adapters.calendar.caldav_adapter import CalendarError
    from leadbot.services.booking import configured_calendar

    try:
        calendar = configured_calendar()
        return sum(calendar.delete_event(uid) for uid in uids)
    except CalendarError as exc:
        raise StoreUnavailable(f"calendar unreachable: {exc}") from exc


def _crm_reference(contact: Contact) -> dict[str, Any]:
    """What the CRM adapter needs to find the contact there, without keeping personal data in the outbox."""
    if contact.crm_id:
        return {"contact_id": contact.id, "crm_id": contact.crm_id}
    # Never synced with an id (e.g. a webhook CRM that answered none): the CRM matches by the number's hash.
    digest = hashlib.sha256(contact.whatsapp_e164.encode()).hexdigest()
    return {"contact_id": contact.id, "crm_id": None, "phone_sha256": digest}


def delete(session: Session, contact: Contact) -> DeletionReport:
    """Delete the contact everywhere (see the module docstring for the order); commits our transaction itself."""
    locked = session.execute(
        select(Contact).where(Contact.id == contact.id).with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if locked is None:
        raise LookupError("contact already deleted")
    contact = locked
    contact_id = contact.id
    sender_id = phone.sender_id_for(contact.whatsapp_e164)
    conversation_ids = list(
        session.execute(select(Conversation.id).where(Conversation.contact_id == contact.id)).scalars()
    )
    ensure_no_turn_in_flight(session, contact, conversation_ids)

    in_conversations = Conversation.id.in_(conversation_ids)
    counts = {
        "conversations": len(conversation_ids),
        "messages": _count(session, Message, Message.conversation_id.in_(conversation_ids)),
        "qualification_answers": _count(
            session, QualificationAnswer, QualificationAnswer.conversation_id.in_(conversation_ids)
        ),
        "tasks_scheduled": _count(session, TaskScheduled, TaskScheduled.conversation_id.in_(conversation_ids)),
        "appointments": _count(session, Appointment, Appointment.conversation_id.in_(conversation_ids)),
        "handovers": _count(session, Handover, Handover.conversation_id.in_(conversation_ids)),
        "knowledge_gaps": _count(session, KnowledgeGap, KnowledgeGap.conversation_id.in_(conversation_ids)),
        "audit_events": _count(session, AuditEvent, AuditEvent.contact_id == contact.id),
        "crm_outbox": _count(session, CrmOutbox, CrmOutbox.contact_id == contact.id),
    }
    crm_reference = _crm_reference(contact)
    calendar_uids = [
        uid
        for uid in session.execute(
            select(Appointment.calendar_uid).where(
                Appointment.conversation_id.in_(conversation_ids), Appointment.calendar_uid.is_not(None)
            )
        ).scalars()
    ]
    # Pending CRM writes would copy the personal data into the CRM after its deletion there: drop them all.
    session.execute(
        sa.delete(CrmOutbox).where(CrmOutbox.contact_id == contact.id).execution_options(synchronize_session=False)
    )
    session.execute(
        sa.delete(AuditEvent).where(AuditEvent.contact_id == contact.id).execution_options(synchronize_session=False)
    )
    session.execute(sa.delete(Conversation).where(in_conversations).execution_options(synchronize_session=False))
    session.execute(sa.delete(Contact).where(Contact.id == contact_id).execution_options(synchronize_session=False))
    # Bulk deletes bypass the identity map: drop the loaded objects so no later flush touches deleted rows.
    session.expunge_all()
    crm_outbox.enqueue(session, contact_id, "delete_contact", crm_reference)
    record = audit.record(
        session,
        contact_id,
        "data_deleted",
        deleted=counts,
        crm="delete_contact queued",
    )
    session.flush()

    tracker_deleted = delete_tracker_events(sender_id)
    calendar_deleted = delete_calendar_events(calendar_uids)
    record.details_json = {
        **record.details_json, "rasa_tracker_events": tracker_deleted, "calendar_events": calendar_deleted
    }
    session.commit()

    try:
        tracker_deleted += delete_tracker_events(sender_id)
        delete_rasa_lock(sender_id)
    except StoreUnavailable as exc:
        # Already deleted above; this sweep only catches a turn that raced us. Retrying needs the contact, which
        # is gone, so log it (PII-free) for the operator instead of failing a completed deletion.
        logger.warning("post-delete sweep for contact %s failed: %s", contact_id, exc)
    logger.info("contact %s deleted (%s tracker events)", contact_id, tracker_deleted)
    return DeletionReport(
        contact_id=contact_id, deleted=counts, tracker_events_deleted=tracker_deleted, audit_event_id=record.id
    )
