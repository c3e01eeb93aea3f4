"""`POST /messages/send` (seed §6): queue a message through the policy gate, for the bot's operators and humans."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field, model_validator
from sqlalchemy.orm import Session

from leadbot.api.deps import Idempotency, db_session, idempotency, require_api_key
from leadbot.api.routes.common import NO_NUL, DbId, StrictModel, get_contact_or_404
from leadbot.domain.templates import TemplateError
from leadbot.services import contacts, handover, outbound

router = APIRouter(tags=["messages"], dependencies=[Depends(require_api_key)])

VariableValue = Annotated[str, Field(pattern=NO_NUL, max_length=1024)] | int
VariableName = Annotated[str, Field(pattern=NO_NUL, max_length=50)]
# Blocks that a corrected request could avoid are the caller's error (422); the others are the contact's state (409).
_REQUEST_ERRORS = {"template_not_approved"}


class SendMessage(StrictModel):
    contact_id: DbId
    type: Literal["session_text", "template"] = Field(
        description="session_text: free text, only inside the 24 h service window; template: an approved template"
    )
    text: Annotated[str, Field(pattern=NO_NUL, min_length=1, max_length=4096)] | None = Field(
        default=None, description="The message text (session_text only)"
    )
    template_name: Annotated[str, Field(pattern=NO_NUL, max_length=100)] | None = Field(
        default=None, description="A name from whatsapp_templates.yml (template only)"
    )
    variables: dict[VariableName, VariableValue] | list[VariableValue] | None = Field(
        default=None, max_length=20, description="Template variables by name or position"
    )
    send_at: AwareDatetime | None = Field(
        default=None, description="Not before this time (ISO 8601 with offset); quiet hours may move it later"
    )
    sent_by: Literal["bot", "human"] = Field(
        default="bot", description="human: a team member's reply (allowed during a handover, counts for the SLA)"
    )

    @model_validator(mode="after")
    def _fits_type(self) -> SendMessage:
        if self.type == "session_text":
            if not self.text or not self.text.strip():
                raise ValueError("type session_text needs a non-empty text")
            if self.template_name is not None:
                raise ValueError("template_name is only allowed with type template")
        else:
            if not self.template_name:
                raise ValueError("type template needs template_name")
            if self.text is not None:
                raise ValueError("text is only allowed with type session_text (templates have fixed bodies)")
        return self


class SendAccepted(BaseModel):
    message_id: int
    conversation_id: int
    status: Literal["queued"] = "queued"
    send_at: datetime
    deferred_for_quiet_hours: bool


class SendBlocked(BaseModel):
    detail: str
    reason: str = Field(description="The policy gate's block reason, e.g. outside_service_window, no_consent")
    message_id: int = Field(description="The failed message row that records the attempt")


@router.post(
    "/messages/send",
    status_code=202,
    response_model=SendAccepted,
    responses={
        404: {"description": "Unknown contact"},
        409: {"model": SendBlocked, "description": "Blocked by the contact's state (consent, window, owner)"},
        422: {"description": "Invalid request, unknown template, or template not approved"},
    },
)
def send_message(
    body: SendMessage,
    session: Session = Depends(db_session),
    idem: Idempotency = Depends(idempotency),
) -> JSONResponse:
    """Queue a WhatsApp message. Every attempt leaves a `messages` row; a blocked one also a `policy_blocked_send`
    audit event, and the answer says why."""
    request_body = body.model_dump(mode="json")
    if (replayed := idem.replay(request_body)) is not None:
        return replayed
    contact = get_contact_or_404(session, body.contact_id)
    conversation = contacts.current_conversation(session, contact, lock=True)
    sender_role = "human" if body.sent_by == "human" else "bot"
    try:
        result = outbound.enqueue(
            session,
            conversation,
            text=body.text,
            template_name=body.template_name,
            variables=body.variables,
            sender_role=sender_role,
            not_before=body.send_at,
        )
    except TemplateError as exc:  # raised before anything is written; the rollback drops the rest
        raise HTTPException(422, str(exc)) from exc
    if result.allowed:
        if sender_role == "human":
            handover.record_human_reply(session, conversation)
        status_code = 202
        response = SendAccepted(
            message_id=result.message_id,
            conversation_id=conversation.id,
            send_at=result.send_at,
            deferred_for_quiet_hours=result.deferred_for_quiet_hours,
        ).model_dump(mode="json")
    else:
        status_code = 422 if result.reason in _REQUEST_ERRORS else 409
        response = SendBlocked(
            detail=f"blocked by the policy gate: {result.reason}", reason=result.reason, message_id=result.message_id
        ).model_dump(mode="json")
    idem.store(request_body, status_code, response)
    # Committed here, not by raising: the blocked row and its audit event must stay ("every outbound message
    # leaves a row"), and the answer is only sent once it is durable.
    session.commit()
    return JSONResponse(response, status_code=status_code)
