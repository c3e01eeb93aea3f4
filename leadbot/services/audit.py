"""The audit log (seed §3 `audit_events`): consent, privacy operations, policy blocks and handovers."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from leadbot.clock import now
from leadbot.db.models import AuditEvent


def record(session: Session, contact_id: int | None, event_type: str, **details: Any) -> AuditEvent:
    event = AuditEvent(contact_id=contact_id, event_type=event_type, details_json=details or None, created_at=now())
    session.add(event)
    return event
