"""Opt-in capture (issue 5 point 1): the start trigger of the lead flow.

A landing page or form posts the lead with the seed's field names; we create or update the contact with granted
consent (source, text version, timestamp as proof), audit `consent_granted`, tell the CRM, and schedule the
welcome for `WELCOME_DELAY_SECONDS` later (seed §4: "5 Minuten nach Opt-in"). The welcome's dedupe key is the
conversation, so a repeated opt-in (a double form submit, a retry) does not send a second welcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy.orm import Session

from leadbot.clock import now
from leadbot.config import settings
from leadbot.db.models import TaskScheduled
from leadbot.phone import InvalidPhoneNumber, normalize_e164
from leadbot.services import audit, contacts, crm_outbox, tasks

DEFAULT_TIMEZONE = "Europe/Berlin"
# Form clocks drift; a consent "from the future" beyond this is a bad timestamp, not skew.
MAX_CLOCK_SKEW = timedelta(minutes=5)


class InvalidOptIn(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class OptInData:
    whatsapp_e164: str
    consent_source: str
    consent_text_version: str
    consent_timestamp: datetime | str
    first_name: str | None = None
    timezone: str | None = DEFAULT_TIMEZONE


@dataclass(frozen=True)
class ValidOptIn:
    whatsapp_e164: str
    first_name: str | None
    timezone: str
    consent_source: str
    consent_text_version: str
    consent_timestamp: datetime


@dataclass(frozen=True)
class OptInResult:
    contact_id: int
    conversation_id: int
    welcome_task_id: int
    welcome_run_at: datetime
    contact_created: bool
    welcome_scheduled: bool  # False: a welcome already existed for this conversation (repeated opt-in)


def _required_text(value: str | None, field: str, max_length: int) -> str:
    text = (value or "").strip()
    if not text:
        raise InvalidOptIn(field, "required")
    if len(text) > max_length:
        raise InvalidOptIn(field, f"longer than {max_length} characters")
    return text


def _timestamp(value: datetime | str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidOptIn("consent_timestamp", "not an ISO 8601 timestamp") from None
    if not isinstance(value, datetime):
        raise InvalidOptIn("consent_timestamp", "required")
    if value.tzinfo is None:
        raise InvalidOptIn("consent_timestamp", "needs a time zone offset (e.g. 2026-11-25T10:00:00+01:00)")
    value = value.astimezone(timezone.utc)
    if value > now() + MAX_CLOCK_SKEW:
        raise InvalidOptIn("consent_timestamp", "lies in the future")
    return value


def _timezone(value: str | None) -> str:
    name = (value or "").strip() or DEFAULT_TIMEZONE
    # available_timezones() rejects paths and odd spellings that ZoneInfo might still open from disk.
    if name not in available_timezones():
        raise InvalidOptIn("timezone", "not an IANA time zone name (e.g. Europe/Berlin)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidOptIn("timezone", "not an IANA time zone name (e.g. Europe/Berlin)") from None
    return name


def validate(data: OptInData) -> ValidOptIn:
    """Check and normalise an opt-in; raises `InvalidOptIn` naming the field. Writes nothing."""
    try:
        e164 = normalize_e164(data.whatsapp_e164)
    except InvalidPhoneNumber as exc:
        raise InvalidOptIn("whatsapp_e164", str(exc)) from None
    first_name = (data.first_name or "").strip() or None
    if first_name is not None and len(first_name) > 100:
        raise InvalidOptIn("first_name", "longer than 100 characters")
    return ValidOptIn(
        whatsapp_e164=e164,
        first_name=first_name,
        timezone=_timezone(data.timezone),
        consent_source=_required_text(data.consent_source, "consent_source", 200),
        consent_text_version=_required_text(data.consent_text_version, "consent_text_version", 50),
        consent_timestamp=_timestamp(data.consent_timestamp),
    )


def opt_in(session: Session, data: OptInData) -> OptInResult:
    """Record the opt-in and schedule the welcome, in the caller's unit of work (the caller commits)."""
    valid = validate(data)
    current = now()
    existing = contacts.find_contact(session, e164=valid.whatsapp_e164)
    contact = existing or contacts.get_or_create_contact(session, valid.whatsapp_e164, valid.first_name)
    if valid.first_name:
        contact.first_name = valid.first_name
    contact.timezone = valid.timezone
    contact.consent_status = "granted"
    contact.consent_source = valid.consent_source
    contact.consent_text_version = valid.consent_text_version
    contact.consent_timestamp = valid.consent_timestamp
    contact.updated_at = current
    session.flush()
    audit.record(
        session,
        contact.id,
        "consent_granted",
        source=valid.consent_source,
        text_version=valid.consent_text_version,
        consent_timestamp=valid.consent_timestamp.isoformat(),
    )
    crm_outbox.enqueue(session, contact.id, "lead_upsert", {"reason": "opt_in", "consent_source": valid.consent_source})

    conversation = contacts.current_conversation(session, contact, lock=True)
    run_at = current + timedelta(seconds=settings().welcome_delay_seconds)
    dedupe_key = f"welcome:c{conversation.id}"
    scheduled = tasks.find_by_dedupe_key(session, dedupe_key) is None
    welcome = tasks.schedule(session, conversation, "welcome", run_at, dedupe_key=dedupe_key)
    if _revivable(welcome):
        # Consent was revoked before the welcome went out and is granted again now: the lead should still get it.
        welcome.status = "pending"
        welcome.run_at = run_at
        welcome.payload_json = {"revived_at": current.isoformat()}
        scheduled = True
    session.flush()
    return OptInResult(
        contact_id=contact.id,
        conversation_id=conversation.id,
        welcome_task_id=welcome.id,
        welcome_run_at=welcome.run_at,
        contact_created=existing is None,
        welcome_scheduled=scheduled,
    )


def _revivable(welcome: TaskScheduled) -> bool:
    return welcome.status == "cancelled" and (welcome.payload_json or {}).get("cancel_reason") == "consent_revoked"

