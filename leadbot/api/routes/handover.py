"""The handover queue and the switch between human and bot: `GET /handovers`, take over, hand back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot import phone
from leadbot.api.deps import db_session, require_api_key
from leadbot.api.routes.common import NO_NUL, StrictModel
from leadbot.clock import now
from leadbot.db.models import Contact, Conversation, Handover
from leadbot.services import handover as handover_service

router = APIRouter(tags=["handover"], dependencies=[Depends(require_api_key)])

ConversationId = Annotated[int, Path(gt=0, le=2**31 - 1)]


class HandoverView(BaseModel):
    id: int
    conversation_id: int
    contact_id: int
    first_name: str | None
    reason: str
    resume_state: str | None
    started_at: datetime
    first_human_response_at: datetime | None
    escalated_at: datetime | None
    lead_notified_at: datetime | None
    ended_at: datetime | None
    waiting_seconds: int | None = Field(description="Open and unanswered: seconds since the handover started")


class TakeOver(StrictModel):
    reason: Annotated[str, Field(pattern=NO_NUL, min_length=1, max_length=64)] = "ops_api"


class HandBackResult(BaseModel):
    conversation_id: int
    owner: str
    status: str
    handover_id: int
    resume_triggered: bool = Field(description="Rasa accepted EXTERNAL_resume; if not, the bot resumes at the "
                                   "lead's next message")


def _view(handover: Handover, contact: Contact) -> HandoverView:
    waiting = None
    if handover.ended_at is None and handover.first_human_response_at is None:
        waiting = int((now() - handover.started_at).total_seconds())
    return HandoverView(
        id=handover.id,
        conversation_id=handover.conversation_id,
        contact_id=contact.id,
        first_name=contact.first_name,
        reason=handover.reason,
        resume_state=handover.resume_state,
        started_at=handover.started_at,
        first_human_response_at=handover.first_human_response_at,
        escalated_at=handover.escalated_at,
        lead_notified_at=handover.lead_notified_at,
        ended_at=handover.ended_at,
        waiting_seconds=waiting,
    )


def _conversation_or_404(session: Session, conversation_id: int) -> Conversation:
    conversation = session.execute(
        select(Conversation).where(Conversation.id == conversation_id).with_for_update()
    ).scalar_one_or_none()
    if conversation is None:
        raise HTTPException(404, "unknown conversation")
    return conversation


@router.get("/handovers", response_model=list[HandoverView])
def list_handovers(
    open_only: bool = Query(True, alias="open", description="true: only handovers not yet handed back"),
    limit: int = Query(200, ge=1, le=1000),
    session: Session = Depends(db_session),
) -> list[HandoverView]:
    """The team's queue: oldest waiting first."""
    query = select(Handover, Contact).join(Conversation, Conversation.id == Handover.conversation_id).join(
        Contact, Contact.id == Conversation.contact_id
    )
    if open_only:
        query = query.where(Handover.ended_at.is_(None))
    rows = session.execute(query.order_by(Handover.started_at, Handover.id).limit(limit)).all()
    return [_view(handover, contact) for handover, contact in rows]


@router.post("/conversations/{conversation_id}/handover", response_model=HandoverView,
             responses={404: {"description": "Unknown conversation"}})
def take_over(
    conversation_id: ConversationId, body: TakeOver | None = None, session: Session = Depends(db_session)
) -> HandoverView:
    """A team member takes the conversation over from the bot (idempotent: an open handover is returned)."""
    conversation = _conversation_or_404(session, conversation_id)
    handover = handover_service.start(session, conversation, (body or TakeOver()).reason)
    session.commit()
    return _view(handover, conversation.contact)


@router.post(
    "/conversations/{conversation_id}/hand-back",
    response_model=HandBackResult,
    responses={404: {"description": "Unknown conversation"}, 409: {"description": "The bot already owns it"}},
)
def hand_back(conversation_id: ConversationId, session: Session = Depends(db_session)) -> HandBackResult:
    """Give the conversation back to the bot; it resumes where the lead was (`EXTERNAL_resume`)."""
    conversation = _conversation_or_404(session, conversation_id)
    try:
        handover = handover_service.hand_back(session, conversation)
    except handover_service.HandoverError as exc:
        raise HTTPException(409, str(exc)) from exc
    sender_id = phone.sender_id_for(conversation.contact.whatsapp_e164)
    result = HandBackResult(
        conversation_id=conversation.id, owner=conversation.owner, status=conversation.status,
        handover_id=handover.id, resume_triggered=False,
    )
    # The resumed Rasa turn must see owner=bot, so the hand-back is committed before Rasa is asked.
    session.commit()
    result.resume_triggered = handover_service.trigger_resume(sender_id)
    return result
