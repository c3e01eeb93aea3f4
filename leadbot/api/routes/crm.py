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
from leadbot.db.models import Contact, Conversation, QualificationAnswer
from leadbot.services import crm_outbox

router = APIRouter(prefix="/integrations/crm", tags=["crm"], dependencies=[Depends(require_api_key)])

PropertyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]
PropertyValue = Annotated[str, Field(pattern=NO_NUL, max_length=2000)] | int | bool | None
Note = Annotated[str, Field(pattern=NO_NUL, min_length=1, max_length=5000)]


class LeadUpsert(StrictModel):
    contact_id: DbId
    properties: dict[PropertyName, PropertyValue] = Field(
        default_factory=dict, max_length=50, description="Extra CRM properties, merged over the lead's own data"
    )


class Activity(StrictModel):
    contact_id: DbId
    activity_type: Literal["note", "call", "meeting", "email", "whatsapp"] = "note"
    note: Note
    occurred_at: AwareDatetime | None = None


class HandoverNotice(StrictModel):
    contact_id: DbId
    reason: Annotated[str, Field(pattern=NO_NUL, min_length=1, max_length=64)]
    note: Note | None = None


class OutboxAccepted(BaseModel):
    outbox_id: int
    operation: str
    status: Literal["pending"] = "pending"


def _latest_conversation(session: Session, contact: Contact) -> Conversation | None:
    return session.execute(
        select(Conversation).where(Conversation.contact_id == contact.id).order_by(Conversation.id.desc()).limit(1)
    ).scalar_one_or_none()


def _lead_snapshot(session: Session, contact: Contact) -> dict[str, Any]:
    """The lead as the CRM should see it now (same fields as the dialogue's own upserts)."""
    conversation = _latest_conversation(session, contact)
    answers = (
        session.execute(
            select(QualificationAnswer).where(QualificationAnswer.conversation_id == conversation.id)
        ).scalar_one_or_none()
        if conversation is not None
        else None
    )
    snapshot: dict[str, Any] = {
        "contact_id": contact.id,
        "whatsapp_e164": contact.whatsapp_e164,
        "first_name": contact.first_name,
        "consent_status": contact.consent_status,
        "conversation_status": conversation.status if conversation is not None else None,
    }
    if answers is not None:
        snapshot.update(
            ads_running=answers.ads_running,
            monthly_leads_bucket=answers.monthly_leads_bucket,
            qualified=answers.qualified,
            reason=answers.reason,
        )
    return snapshot


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
    """Create or update the lead in the CRM (matched by phone number)."""
    cached = idem.lookup(body.model_dump(mode="json"))
    if cached is not None:
        return JSONResponse(cached.response_json, status_code=cached.status_code)
    contact = get_contact_or_404(session, body.contact_id)
    payload = {**_lead_snapshot(session, contact), "properties": body.properties}
    return _enqueue(session, idem, body, contact.id, "lead_upsert", payload)


@router.post("/activity", status_code=202, response_model=OutboxAccepted, responses=_RESPONSES)
def activity(
    body: Activity, session: Session = Depends(db_session), idem: Idempotency = Depends(idempotency)
) -> JSONResponse:
    """Log an activity (a note) on the lead in the CRM."""
    cached = idem.lookup(body.model_dump(mode="json"))
    if cached is not None:
        return JSONResponse(cached.response_json, status_code=cached.status_code)
    contact = get_contact_or_404(session, body.contact_id)
    payload = {
        "contact_id": contact.id,
        "activity_type": body.activity_type,
        "note": body.note,
        "occurred_at": (body.occurred_at or now()).isoformat(),
    }
    return _enqueue(session, idem, body, contact.id, "activity", payload)


@router.post("/handover", status_code=202, response_model=OutboxAccepted, responses=_RESPONSES)
def handover_notice(
    body: HandoverNotice, session: Session = Depends(db_session), idem: Idempotency = Depends(idempotency)
) -> JSONResponse:
    """Create a handover task for the team in the CRM. (To let a human take over the chat itself, use
    `POST /conversations/{id}/handover`, which also notifies the CRM.)"""
    cached = idem.lookup(body.model_dump(mode="json"))
    if cached is not None:
        return JSONResponse(cached.response_json, status_code=cached.status_code)
    contact = get_contact_or_404(session, body.contact_id)
    conversation = _latest_conversation(session, contact)
    payload = {
        "contact_id": contact.id,
        "conversation_id": conversation.id if conversation is not None else None,
        "reason": body.reason,
        "note": body.note,
        "escalation": False,
        "started_at": now().isoformat(),
    }
    return _enqueue(session, idem, body, contact.id, "handover", payload)
