"""The data model: the seed's six tables (exact field names and enum values) plus what the product needs.

Written for SQLAlchemy 1.4 (Rasa 3.6's pin) in 2.0 style, so it imports inside the Rasa process and in the
Python 3.11 services alike. Enums are VARCHAR + CHECK so the same migrations run on PostgreSQL and SQLite.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import declarative_base, relationship
from sqlalchemy.types import TypeDecorator

Base = declarative_base()

# --- Enum values, as the seed spells them -------------------------------------------------------------
CONSENT_STATUSES = ("granted", "revoked", "unknown")
CONVERSATION_STATUSES = ("open", "qualified", "disqualified", "handover", "closed")
OWNERS = ("bot", "human")
DIRECTIONS = ("inbound", "outbound")
CHANNELS = ("whatsapp",)
MESSAGE_TYPES = ("text", "template", "interactive", "media")
DELIVERY_STATUSES = ("queued", "sent", "delivered", "read", "failed")
ADS_RUNNING = ("yes", "no", "unknown")
LEAD_BUCKETS = ("<100", "100-300", "300+", "unknown")
QUALIFIED = ("true", "false", "pending")
# The seed's six task types, plus the welcome (seed §4 start trigger) and the handover SLA check.
TASK_TYPES = (
    "welcome",
    "nudge_30m",
    "followup_24h",
    "followup_48h",
    "reminder_22h",
    "reminder_55m",
    "reminder_5m",
    "handover_sla",
)
TASK_STATUSES = ("pending", "running", "done", "cancelled", "failed")
AUDIT_EVENT_TYPES = (
    "consent_granted",
    "consent_revoked",
    "data_exported",
    "data_deleted",
    "policy_blocked_send",
    "handover",
)
APPOINTMENT_STATUSES = ("booked", "cancelled", "rescheduled", "attended", "no_show")
SENDER_ROLES = ("bot", "human", "system")
OUTBOX_STATUSES = ("pending", "done", "failed")
DEAD_LETTER_KINDS = ("outbound_message", "crm_sync", "task")


def _enum(values: tuple[str, ...], name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, returns aware UTC: identical on PostgreSQL and SQLite."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


def _now() -> datetime:
    from leadbot.clock import now

    return now()


def _created() -> sa.Column:
    return sa.Column(UTCDateTime(), nullable=False, default=_now)


def _updated() -> sa.Column:
    return sa.Column(UTCDateTime(), nullable=False, default=_now, onupdate=_now)


class Contact(Base):
    __tablename__ = "contacts"

    id = sa.Column(sa.Integer, primary_key=True)
    whatsapp_e164 = sa.Column(sa.String(20), nullable=False, unique=True)
    first_name = sa.Column(sa.String(100))
    timezone = sa.Column(sa.String(64), nullable=False, default="Europe/Berlin")
    language = sa.Column(sa.String(8), nullable=False, default="de")
    consent_status = sa.Column(_enum(CONSENT_STATUSES, "consent_status"), nullable=False, default="unknown")
    consent_source = sa.Column(sa.String(200))
    consent_text_version = sa.Column(sa.String(50))
    consent_timestamp = sa.Column(UTCDateTime())
    created_at = _created()
    updated_at = _updated()
    # The CRM's own id of this contact (HubSpot object id, or what a webhook receiver answered); migration 0002.
    crm_id = sa.Column(sa.String(100))

    conversations = relationship("Conversation", back_populates="contact", cascade="all, delete-orphan")


class Conversation(Base):
    __tablename__ = "conversations"

    id = sa.Column(sa.Integer, primary_key=True)
    contact_id = sa.Column(sa.Integer, sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False, index=True)
    status = sa.Column(_enum(CONVERSATION_STATUSES, "conversation_status"), nullable=False, default="open")
    current_state = sa.Column(sa.String(64), nullable=False, default="start")
    last_inbound_at = sa.Column(UTCDateTime())
    last_outbound_at = sa.Column(UTCDateTime())
    service_window_expires_at = sa.Column(UTCDateTime())
    owner = sa.Column(_enum(OWNERS, "conversation_owner"), nullable=False, default="bot")
    created_at = _created()
    updated_at = _updated()

    contact = relationship("Contact", back_populates="conversations")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        sa.UniqueConstraint("channel", "provider_message_id", name="uq_messages_channel_provider_id"),
        # The sender's hot query: the oldest queued outbound message per conversation that is due.
        sa.Index("ix_messages_outbound_queue", "delivery_status", "send_at"),
        sa.Index("ix_messages_conversation_order", "conversation_id", "id"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    conversation_id = sa.Column(
        sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    direction = sa.Column(_enum(DIRECTIONS, "message_direction"), nullable=False)
    channel = sa.Column(_enum(CHANNELS, "message_channel"), nullable=False, default="whatsapp")
    provider_message_id = sa.Column(sa.String(64))
    message_type = sa.Column(_enum(MESSAGE_TYPES, "message_type"), nullable=False, default="text")
    content = sa.Column(sa.Text)
    template_name = sa.Column(sa.String(100))
    delivery_status = sa.Column(_enum(DELIVERY_STATUSES, "delivery_status"), nullable=False, default="queued")
    error_code = sa.Column(sa.String(64))
    created_at = _created()
    # Beyond the seed: what the outbound queue and the inbound turn runner need.
    sender_role = sa.Column(_enum(SENDER_ROLES, "sender_role"), nullable=False, default="bot")
    is_marketing = sa.Column(sa.Boolean, nullable=False, default=False)
    payload_json = sa.Column(sa.JSON)  # buttons, template variables, media urls, button payloads
    send_at = sa.Column(UTCDateTime())
    sent_at = sa.Column(UTCDateTime())
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    next_attempt_at = sa.Column(UTCDateTime())
    processed_at = sa.Column(UTCDateTime())  # inbound: when the dialogue turn for it completed


class QualificationAnswer(Base):
    __tablename__ = "qualification_answers"

    id = sa.Column(sa.Integer, primary_key=True)
    conversation_id = sa.Column(
        sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    ads_running = sa.Column(_enum(ADS_RUNNING, "ads_running"), nullable=False, default="unknown")
    monthly_leads_bucket = sa.Column(_enum(LEAD_BUCKETS, "monthly_leads_bucket"), nullable=False, default="unknown")
    qualified = sa.Column(_enum(QUALIFIED, "qualified"), nullable=False, default="pending")
    reason = sa.Column(sa.String(200))
    updated_at = _updated()
    monthly_leads_estimate = sa.Column(sa.Integer)


class TaskScheduled(Base):
    __tablename__ = "tasks_scheduled"
    __table_args__ = (
        # "Due pending tasks" is the scheduler's hot query.
        sa.Index("ix_tasks_due", "status", "run_at"),
        sa.UniqueConstraint("dedupe_key", name="uq_tasks_dedupe_key"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    conversation_id = sa.Column(
        sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    task_type = sa.Column(_enum(TASK_TYPES, "task_type"), nullable=False)
    run_at = sa.Column(UTCDateTime(), nullable=False)
    payload_json = sa.Column(sa.JSON)
    status = sa.Column(_enum(TASK_STATUSES, "task_status"), nullable=False, default="pending")
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    # Beyond the seed: lease for crash recovery, idempotent scheduling, and a trace of failures.
    lease_expires_at = sa.Column(UTCDateTime())
    locked_by = sa.Column(sa.String(64))
    dedupe_key = sa.Column(sa.String(120))
    appointment_id = sa.Column(sa.Integer, sa.ForeignKey("appointments.id", ondelete="CASCADE"))
    last_error = sa.Column(sa.Text)
    created_at = _created()
    updated_at = _updated()


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id = sa.Column(sa.Integer, primary_key=True)
    # No foreign key: the PII-free `data_deleted` record outlives the contact it describes.
    contact_id = sa.Column(sa.Integer, index=True)
    event_type = sa.Column(_enum(AUDIT_EVENT_TYPES, "audit_event_type"), nullable=False)
    details_json = sa.Column(sa.JSON)
    created_at = _created()


class Appointment(Base):
    __tablename__ = "appointments"

    id = sa.Column(sa.Integer, primary_key=True)
    conversation_id = sa.Column(
        sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    status = sa.Column(_enum(APPOINTMENT_STATUSES, "appointment_status"), nullable=False, default="booked")
    starts_at = sa.Column(UTCDateTime(), nullable=False)
    ends_at = sa.Column(UTCDateTime(), nullable=False)
    meeting_link = sa.Column(sa.String(500))
    calendar_uid = sa.Column(sa.String(200), unique=True)
    created_at = _created()
    updated_at = _updated()


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id = sa.Column(sa.Integer, primary_key=True)
    kind = sa.Column(_enum(DEAD_LETTER_KINDS, "dead_letter_kind"), nullable=False)
    message_id = sa.Column(sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE"))
    outbox_id = sa.Column(sa.Integer, sa.ForeignKey("crm_outbox.id", ondelete="CASCADE"))
    task_id = sa.Column(sa.Integer, sa.ForeignKey("tasks_scheduled.id", ondelete="CASCADE"))
    reason = sa.Column(sa.Text, nullable=False)
    error_code = sa.Column(sa.String(64))
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    created_at = _created()
    replayed_at = sa.Column(UTCDateTime())


class CrmOutbox(Base):
    """Transactional outbox: CRM writes are committed with the change that causes them, sent later."""

    __tablename__ = "crm_outbox"
    __table_args__ = (sa.Index("ix_crm_outbox_due", "status", "next_attempt_at"),)

    id = sa.Column(sa.Integer, primary_key=True)
    contact_id = sa.Column(sa.Integer, index=True)
    operation = sa.Column(sa.String(32), nullable=False)  # lead_upsert | activity | handover | delete_contact
    payload_json = sa.Column(sa.JSON, nullable=False)
    status = sa.Column(_enum(OUTBOX_STATUSES, "outbox_status"), nullable=False, default="pending")
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    next_attempt_at = sa.Column(UTCDateTime(), nullable=False, default=_now)
    last_error = sa.Column(sa.Text)
    created_at = _created()
    updated_at = _updated()


class Handover(Base):
    """One human handover of a conversation, for the SLA and the time-to-first-human-response KPI."""

    __tablename__ = "handovers"

    id = sa.Column(sa.Integer, primary_key=True)
    conversation_id = sa.Column(
        sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    reason = sa.Column(sa.String(64), nullable=False)
    resume_state = sa.Column(sa.String(64))
    started_at = sa.Column(UTCDateTime(), nullable=False)
    first_human_response_at = sa.Column(UTCDateTime())
    escalated_at = sa.Column(UTCDateTime())
    lead_notified_at = sa.Column(UTCDateTime())
    ended_at = sa.Column(UTCDateTime())


class KnowledgeGap(Base):
    """A question the assistant could not answer from the approved sources, for the team to review."""

    __tablename__ = "knowledge_gaps"

    id = sa.Column(sa.Integer, primary_key=True)
    conversation_id = sa.Column(sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    question = sa.Column(sa.Text, nullable=False)
    best_source = sa.Column(sa.String(100))
    score = sa.Column(sa.Float)
    created_at = _created()


class IdempotencyKey(Base):
    """Ops API: a replayed request with the same `Idempotency-Key` gets the first answer back."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("key", "endpoint", name="uq_idempotency_key_endpoint"),)

    id = sa.Column(sa.Integer, primary_key=True)
    key = sa.Column(sa.String(200), nullable=False)
    endpoint = sa.Column(sa.String(100), nullable=False)
    request_hash = sa.Column(sa.String(64), nullable=False)
    status_code = sa.Column(sa.Integer, nullable=False)
    response_json = sa.Column(sa.JSON, nullable=False)
    created_at = _created()
