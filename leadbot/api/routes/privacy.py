"""DSGVO operations (seed §6 "DSGVO Ops"): export, delete, revoke consent. Each writes an audit event.

No `Idempotency-Key` here on purpose: all three are naturally idempotent (a second delete answers 404, a second
revoke changes nothing), and a stored key would keep a hash of the request, i.e. of the phone number.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from leadbot.api.deps import db_session, require_api_key
from leadbot.api.routes.common import ContactRef, contact_or_404
from leadbot.services import consent, privacy

router = APIRouter(prefix="/privacy", tags=["privacy"], dependencies=[Depends(require_api_key)])

_NOT_FOUND = {404: {"description": "Unknown contact"}}
# Seconds a client should wait before retrying a delete refused because a turn is in flight.
_RETRY_AFTER = {"Retry-After": "5"}


class DeleteResult(BaseModel):
    contact_id: int
    deleted: dict[str, int] = Field(description="Rows removed per table of our database")
    rasa_tracker_events_deleted: int
    crm_delete_queued: bool = True
    audit_event_id: int = Field(description="The PII-free data_deleted record that remains")


class RevokeResult(BaseModel):
    contact_id: int
    consent_status: str


_UNAVAILABLE = {503: {"description": "Rasa's tracker database or lock store is unreachable; retry (Retry-After)"}}


@router.post("/export", responses={**_NOT_FOUND, **_UNAVAILABLE})
def export_contact(body: ContactRef, session: Session = Depends(db_session)) -> dict[str, Any]:
    """Everything stored about the contact, keyed by table name with the tables' field names, plus the Rasa
    tracker events of their conversations (`rasa_tracker_events`)."""
    contact = contact_or_404(session, body)
    try:
        data = privacy.export(session, contact)
    except privacy.StoreUnavailable as exc:  # an export without the tracker events would be incomplete
        raise HTTPException(503, str(exc), headers=_RETRY_AFTER) from exc
    session.commit()
    return data


@router.post(
    "/delete",
    response_model=DeleteResult,
    responses={
        **_NOT_FOUND,
        **_UNAVAILABLE,
        409: {"description": "A turn for this contact is in flight; retry (Retry-After)"},
    },
)
def delete_contact(body: ContactRef, session: Session = Depends(db_session)) -> DeleteResult:
    """Delete the contact's personal data everywhere: our tables, the Rasa tracker and lock, and (through the
    outbox) the CRM. Refuses with 409 while a turn for the contact runs; never deletes half."""
    contact = contact_or_404(session, body)
    try:
        report = privacy.delete(session, contact)
    except privacy.TurnInFlight as exc:
        raise HTTPException(409, str(exc), headers=_RETRY_AFTER) from exc
    except privacy.StoreUnavailable as exc:
        raise HTTPException(503, f"{exc}; nothing was deleted", headers=_RETRY_AFTER) from exc
    except LookupError as exc:  # deleted by a concurrent request between lookup and lock
        raise HTTPException(404, "unknown contact") from exc
    return DeleteResult(
        contact_id=report.contact_id,
        deleted=report.deleted,
        rasa_tracker_events_deleted=report.tracker_events_deleted,
        audit_event_id=report.audit_event_id,
    )


@router.post("/revoke-consent", response_model=RevokeResult, responses=_NOT_FOUND)
def revoke_consent(body: ContactRef, session: Session = Depends(db_session)) -> RevokeResult:
    """What STOP does: consent revoked, one confirmation to the lead, marketing cancelled, CRM updated."""
    contact = contact_or_404(session, body)
    consent.revoke(session, contact, source="ops_api")
    session.commit()
    return RevokeResult(contact_id=contact.id, consent_status=contact.consent_status)
