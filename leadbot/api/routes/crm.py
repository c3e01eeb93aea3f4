"""CRM integration endpoints (seed §6): each one commits a `crm_outbox` row; the outbox worker delivers it with
retries, so the caller never waits on the CRM and a CRM outage loses nothing."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot.api.deps import Idempotency, db_session, idempotency, require_api_key
from leadbot.api.routes.common import NO_NUL, DbId, StrictModel, get_contact_or_404
from leadbot.clock import now
from leadbot.db.models import Contact, Conversation
from leadbot.services import crm_outbox

router = APIRouter(prefix="/integrations/crm", tags=["crm"], dependencies=[Depends(require_api_key)])

PropertyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]
PropertyValue = Annotated[str, Field(pattern=NO_NUL, max_length=2000)] | int | bool | None
Note = Annotated[str, Field(pattern=NO_NUL, min_length=1, max_length=5000)]


class LeadUpsert(StrictModel):
    contact_id: DbId
    properties: dict[PropertyName, PropertyValue] = Field(
        default_factory=dict, max_length=50, description="Extra CRM fields; the lead's own data is always sent"
    )


class Activity(StrictModel):
    contact_id: DbId
    type: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,50}$")] = Field(
        default="note", description="e.g. note, call, appointment_booked"
    )
    text: Note = Field(description="The note as the team reads it in the CRM")
    occurred_at: AwareDatetime | None = None


class HandoverNotice(StrictModel):
    contact_id: DbId
    reason: Annotated[str, Field(pattern=NO_NUL, min_length=1, max_length=64)]
    text: Note | None = Field(default=None, description="What the team should do (default: a German standard text)")
    due_at: AwareDatetime | None = Field(default=None, description="Default: now + HANDOVER_SLA_MINUTES")


class OutboxAccepted(BaseModel):
    outbox_id: int
    operation: str
    status: Literal["pending"] = "pending"


def _latest_conversation(session: Session, contact: Contact) -> Conversation | None:
    return session.execute(
        select(Conversation).where(Conversation.contact_id == contact.id).order_by(Conversation.id.desc()).limit(1)
    ).scalar_one_or_none()


def _enqueue(
    session: Session, idem: Idempotency, body: StrictModel, contact_id: int, operation: str, payload: dict[str, Any]
) -> JSONResponse:
    row = crm_outbox.enqueue(session, contact_id, operation, payload)
    session.flush()
    response = OutboxAccepted(outbox_id=row.id, operation=operation).model_dump(mode="json")
    idem.store(body.model_dump(mode="json"), 202, response)
    session.commit()
    return JSONResponse(response, status_code=202)


_RESPONSES: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown contact"}}


@router.post("/lead-upsert", status_code=202, response_model=OutboxAccepted, responses=_RESPONSES)
def lead_upsert(
    body: LeadUpsert, session: Session = Depends(db_session), idem: Idempotency = Depends(idempotency)
) -> JSONResponse:
    """Create or update the lead in the CRM (matched by phone number) with its current data."""
    if (replayed := idem.replay(body.model_dump(mode="json"))) is not None:
        return replayed
    contact = get_contact_or_404(session, body.contact_id)
    # The outbox worker sends the contact's current state at delivery time; the payload only adds extra fields.
    return _enqueue(session, idem, body, contact.id, "lead_upsert", dict(body.properties))


@router.post("/activity", status_code=202, response_model=OutboxAccepted, responses=_RESPONSES)
def activity(
    body: Activity, session: Session = Depends(db_session), idem: Idempotency = Depends(idempotency)
) -> JSONResponse:
    """Log an activity (a note) on the lead in the CRM."""
    if (replayed := idem.replay(body.model_dump(mode="json"))) is not None:
        return replayed
    contact = get_contact_or_404(session, body.contact_id)
    payload = {"type": body.type, "text": body.text, "occurred_at": (body.occurred_at or now()).isoformat()}
    return _enqueue(session, idem, body, contact.id, "activity", payload)


@router.post("/handover", status_code=202, response_model=OutboxAccepted, responses=_RESPONSES)
def handover_notice(
    body: HandoverNotice, session: Session = Depends(db_session), idem: Idempotency = Depends(idempotency)
) -> JSONResponse:
    """Create a handover task for the team in the CRM. (To let a human take over the chat itself, use
    `POST /conversations/{id}/handover`, which also notifies the CRM.)"""
    if (replayed := idem.replay(body.model_dump(mode="json"))) is not None:
        return replayed
    contact = get_contact_or_404(session, body.contact_id)
    conversation = _latest_conversation(session, contact)
    payload: dict[str, Any] = {
        "conversation_id": conversation.id if conversation is not None else None,
        "reason": body.reason,
        "escalation": False,
    }
    if body.text is not None:
        payload["text"] = body.text
    if body.due_at is not None:
        payload["due_at"] = body.due_at.isoformat()
    return _enqueue(session, idem, body, contact.id, "handover", payload)
