"""Consent: what an opt-out (STOP) does, from WhatsApp, a Twilio error code, or the ops API (issue 3 point 6).

`revoke` is idempotent: the first call revokes consent, audits `consent_revoked`, queues exactly one German
confirmation (the only message the policy gate still allows), cancels every pending marketing task and queued
marketing message, and upserts the lead in the CRM. A repeated STOP changes nothing and sends nothing.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from leadbot.clock import now as clock_now
from leadbot.db.models import Contact, Conversation, Message
from leadbot.domain.policy import Purpose
from leadbot.services import audit, contacts, crm_outbox, outbound, tasks

logger = logging.getLogger(__name__)

OPT_OUT_CONFIRMATION = (
    "Alles klar, du bekommst von uns keine Nachrichten mehr. "
    "Falls du es dir anders überlegst, schreib uns einfach wieder."
)


def revoke(session: Session, contact: Contact, source: str) -> None:
    """Revoke the contact's consent (the caller commits). A repeated call is a no-op."""
    # Serialise concurrent opt-outs of one contact (two STOPs, a STOP and a 21610 callback): one confirmation.
    session.execute(select(Contact.id).where(Contact.id == contact.id).with_for_update())
    session.flush()
    session.refresh(contact)
    if contact.consent_status == "revoked":
        logger.info("consent already revoked for contact %s (source %s)", contact.id, source)
        return
    current = clock_now()
    contact.consent_status = "revoked"
    contact.consent_source = source[:200]
    contact.consent_timestamp = current
    contact.updated_at = current
    audit.record(session, contact.id, "consent_revoked", source=source)

    conversation = contacts.current_conversation(session, contact)
    outbound.enqueue(
        session,
        conversation,
        text=OPT_OUT_CONFIRMATION,
        purpose=Purpose.OPT_OUT_CONFIRMATION,
        sender_role="system",
    )
    _cancel_marketing(session, contact)
    crm_outbox.enqueue(
        session,
        contact.id,
        "lead_upsert",
        {
            "contact_id": contact.id,
            "whatsapp_e164": contact.whatsapp_e164,
            "first_name": contact.first_name,
            "consent_status": "revoked",
            "consent_source": source,
            "consent_timestamp": current.isoformat(),
        },
    )


def _cancel_marketing(session: Session, contact: Contact) -> None:
    conversation_ids = list(
        session.execute(select(Conversation.id).where(Conversation.contact_id == contact.id)).scalars()
    )
    if not conversation_ids:
        return
    for conversation in session.execute(
        select(Conversation).where(Conversation.id.in_(conversation_ids), Conversation.status != "closed")
    ).scalars():
        tasks.on_consent_revoked(session, conversation)
    # Marketing already queued but not yet handed to Twilio must not go out either.
    session.execute(
        update(Message)
        .where(
            Message.conversation_id.in_(conversation_ids),
            Message.direction == "outbound",
            Message.is_marketing.is_(True),
            Message.delivery_status == "queued",
            Message.provider_message_id.is_(None),
        )
        .values(delivery_status="failed", error_code="policy:consent_revoked")
        .execution_options(synchronize_session=False)
    )
