"""The CRM call site: every CRM write is committed to the outbox together with the change that causes it.

A separate worker (`leadbot.adapters.crm`) delivers the outbox with retries, so a CRM outage loses nothing and
no conversation waits on the CRM.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from leadbot.clock import now
from leadbot.db.models import CrmOutbox

OPERATIONS = ("lead_upsert", "activity", "handover", "delete_contact")


def enqueue(session: Session, contact_id: int | None, operation: str, payload: dict[str, Any]) -> CrmOutbox:
    if operation not in OPERATIONS:
        raise ValueError(f"unknown CRM operation: {operation}")
    row = CrmOutbox(contact_id=contact_id, operation=operation, payload_json=payload, next_attempt_at=now())
    session.add(row)
    return row
