"""The outbound service: the only way a message gets queued for WhatsApp.

Every sender (the Rasa channel's output side, scheduler tasks, the ops API, a human agent) calls `enqueue`. It
runs the policy gate (`leadbot.domain.policy`), keeps per-contact order, and always leaves a `messages` row: a
queued one for the sender worker, or a failed one with the block reason plus a `policy_blocked_send` audit event.
Nothing here talks to Twilio; the sender worker does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from leadbot import metrics
from leadbot.clock import now as clock_now
from leadbot.config import Settings, settings
from leadbot.db.models import Contact, Conversation, Message
from leadbot.domain import policy
from leadbot.domain.policy import MessageKind, Purpose
from leadbot.domain.templates import get_template
from leadbot.services import audit


@dataclass(frozen=True)
class OutboundResult:
    message_id: int
    allowed: bool
    send_at: datetime | None
    reason: str | None = None
    deferred_for_quiet_hours: bool = False


def policy_config(cfg: Settings | None = None) -> policy.PolicyConfig:
    cfg = cfg or settings()
    return policy.PolicyConfig(quiet_start=time(*cfg.quiet_hours_start), quiet_end=time(*cfg.quiet_hours_end))


def contact_state(contact: Contact, conversation: Conversation) -> policy.ContactState:
    return policy.ContactState(
        consent_status=contact.consent_status,
        timezone=contact.timezone or "Europe/Berlin",
        service_window_expires_at=conversation.service_window_expires_at,
        owner=conversation.owner,
    )


def draw_reply_delay(cfg: Settings | None = None) -> timedelta:
    """A human-like reply delay from the configured range (0 disables it, as in tests)."""
    cfg = cfg or settings()
    low, high = cfg.reply_delay_min_seconds, max(cfg.reply_delay_min_seconds, cfg.reply_delay_max_seconds)
    return timedelta(seconds=random.uniform(low, high)) if high > 0 else timedelta(0)


def queue_tail(session: Session, conversation_id: int) -> datetime | None:
    """The latest `send_at` still waiting for this conversation: later messages may not overtake it."""
    return session.execute(
        select(func.max(Message.send_at)).where(
            Message.conversation_id == conversation_id,
            Message.direction == "outbound",
            Message.delivery_status == "queued",
            Message.provider_message_id.is_(None),
        )
    ).scalar_one_or_none()


def enqueue(
    session: Session,
    conversation: Conversation,
    *,
    text: str | None = None,
    template_name: str | None = None,
    variables: dict[str, Any] | list[Any] | None = None,
    buttons: list[dict[str, str]] | None = None,
    media_url: str | None = None,
    purpose: Purpose = Purpose.CONVERSATION,
    sender_role: str = "bot",
    not_before: datetime | None = None,
    deadline: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> OutboundResult:
    """Run the policy gate and write the message row. The caller commits (with whatever caused the send)."""
    contact = conversation.contact
    current = clock_now()
    payload: dict[str, Any] = dict(extra or {})
    if template_name:
        template = get_template(template_name)
        kind = MessageKind.TEMPLATE
        content = template.render(variables)
        payload["variables"] = template.positional(variables)
        if template.buttons:
            payload["buttons"] = [{"title": title, "payload": title} for title in template.buttons]
        if template.purpose == "marketing" and purpose is Purpose.CONVERSATION:
            purpose = Purpose.MARKETING
        approved = template.approved
        message_type = "template"
    else:
        if not text and not media_url:
            raise ValueError("a session message needs text or media")
        kind, content, approved = MessageKind.SESSION, text or "", False
        message_type = "interactive" if buttons else ("media" if media_url else "text")
        if buttons:
            payload["buttons"] = buttons
        if media_url:
            payload["media_url"] = media_url

    tail = queue_tail(session, conversation.id)
    candidates = [moment for moment in (not_before, tail) if moment is not None]
    request = policy.SendRequest(
        kind=kind,
        purpose=purpose,
        sender_role=sender_role,
        template_name=template_name,
        template_approved=approved,
        not_before=max(candidates) if candidates else None,
        deadline=deadline,
    )
    decision = policy.evaluate(request, contact_state(contact, conversation), current, policy_config())
    payload["purpose"] = purpose.value
    if deadline is not None:  # the sender re-checks it when the message finally goes out
        payload["deadline"] = deadline.isoformat()
    message = Message(
        conversation_id=conversation.id,
        direction="outbound",
        channel="whatsapp",
        message_type=message_type,
        content=content,
        template_name=template_name,
        delivery_status="queued" if decision.allowed else "failed",
        error_code=None if decision.allowed else f"policy:{decision.reason.value}",
        sender_role=sender_role,
        is_marketing=purpose is Purpose.MARKETING,
        payload_json=payload or None,
        send_at=decision.send_at if decision.allowed else None,
        created_at=current,
    )
    session.add(message)
    session.flush()
    if not decision.allowed:
        metrics.POLICY_BLOCKS.labels(reason=decision.reason.value).inc()
        audit.record(
            session,
            contact.id,
            "policy_blocked_send",
            reason=decision.reason.value,
            message_id=message.id,
            template_name=template_name,
            purpose=purpose.value,
            sender_role=sender_role,
        )
    return OutboundResult(
        message_id=message.id,
        allowed=decision.allowed,
        send_at=decision.send_at,
        reason=decision.reason.value if decision.reason else None,
        deferred_for_quiet_hours=decision.deferred_for_quiet_hours,
    )
