"""The local WhatsApp simulator (issue 8 point 4): `GET /simulator` and its JSON under `/simulator/api/...`.

A sales team tests real conversation quality without a Twilio account (seed §9 UAT): the page plays the lead's
phone. It creates leads through the opt-in service, sends what Twilio would send to the real channel (a signed
inbound webhook with a fresh `SM…` MessageSid), shows every outbound message from the database with its delivery
ticks (the sandbox outbox's signed status callbacks), reports "read" as a signed status callback once the lead has
seen a message, and moves the clock of every process through the shared offset file (`LEADBOT_CLOCK_OFFSET_FILE`)
so the welcome, nudges, follow-ups and reminders fire in seconds.

Enabled only while no Twilio credentials are configured, or with `SIMULATOR_ENABLED=1` (then its messages are
real and signed with the real token); otherwise every route here is a 404. The JSON needs the ops API key.
"""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot import phone
from leadbot.adapters.twilio_transport import STATUS_CALLBACK_PATH, whatsapp_address
from leadbot.api.deps import db_session, require_api_key
from leadbot.api.routes.common import NO_NUL, DbId, StrictModel, get_contact_or_404
from leadbot.api.routes.dashboard import static_file
from leadbot.clock import OffsetFileClock, now
from leadbot.config import Settings, settings
from leadbot.db.models import Contact, Conversation, Message, TaskScheduled
from leadbot.services import leads

logger = logging.getLogger(__name__)

INBOUND_PATH = "/webhooks/whatsapp/inbound"
CONSENT_SOURCE = "simulator"
# Time travel forwards only (the scheduler's leases and the KPIs assume time does not run back), at most 90 days.
MAX_ADVANCE_SECONDS = 90 * 86400
# What the polling page gets at most per call, and how far back delivery ticks are refreshed.
PAGE_SIZE = 200
WEBHOOK_TIMEOUT_SECONDS = 15.0
# Only this process writes the offset file; the lock keeps two quick "skip ahead" clicks from losing one.
_clock_lock = threading.Lock()


def require_simulator() -> None:
    if not settings().simulator_active:
        raise HTTPException(404, "Not Found")


router = APIRouter(tags=["simulator"], include_in_schema=False, dependencies=[Depends(require_simulator)])
api = APIRouter(prefix="/simulator/api", dependencies=[Depends(require_api_key)])


@router.get("/simulator")
def simulator_page() -> FileResponse:
    return static_file("simulator.html")


@router.get("/simulator/simulator.js")
def simulator_script() -> FileResponse:
    return static_file("simulator.js")


@router.get("/simulator/simulator.css")
def simulator_style() -> FileResponse:
    return static_file("simulator.css")


# --- Twilio's side: what Twilio would post to our channel ---------------------------------------------------


def _account_sid(cfg: Settings) -> str:
    # The sandbox outbox uses the same placeholder, so inbound and status callbacks name one account.
    return cfg.twilio_account_sid or "AC" + "0" * 32


def _business_address(cfg: Settings) -> str:
    return whatsapp_address(cfg.twilio_whatsapp_from)


def inbound_params(
    cfg: Settings, contact: Contact, body: str, button_payload: str = "", button_text: str = ""
) -> dict[str, str]:
    """The form fields of Twilio's incoming-message webhook for a WhatsApp text or quick-reply tap."""
    sid = "SM" + secrets.token_hex(16)
    params = {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "AccountSid": _account_sid(cfg),
        "From": whatsapp_address(contact.whatsapp_e164),
        "To": _business_address(cfg),
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "SmsStatus": "received",
        "MessageType": "button" if button_payload else "text",
        "ProfileName": contact.first_name or "",
        "WaId": contact.whatsapp_e164.lstrip("+"),
        "ApiVersion": "2010-04-01",
    }
    if cfg.twilio_messaging_service_sid:
        params["MessagingServiceSid"] = cfg.twilio_messaging_service_sid
    if button_payload:
        params["ButtonPayload"] = button_payload
        params["ButtonText"] = button_text or body
    return params


def read_params(cfg: Settings, contact: Contact, message_sid: str) -> dict[str, str]:
    """A `read` status callback, with the fields the sandbox outbox sends for `sent` and `delivered`."""
    params = {
        "MessageSid": message_sid,
        "SmsSid": message_sid,
        "MessageStatus": "read",
        "SmsStatus": "read",
        "AccountSid": _account_sid(cfg),
        "From": cfg.twilio_messaging_service_sid or _business_address(cfg),
        "To": whatsapp_address(contact.whatsapp_e164),
        "ApiVersion": "2010-04-01",
        "ChannelPrefix": "whatsapp",
    }
    if cfg.twilio_messaging_service_sid:
        params["MessagingServiceSid"] = cfg.twilio_messaging_service_sid
    return params


def post_signed(cfg: Settings, path: str, params: dict[str, str]) -> httpx.Response:
    """POST like Twilio: to PUBLIC_BASE_URL + path, `X-Twilio-Signature` over that URL and the form fields."""
    from twilio.request_validator import RequestValidator

    url = cfg.public_base_url.rstrip("/") + path
    signature = RequestValidator(cfg.webhook_auth_token).compute_signature(url, params)
    try:
        return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=WEBHOOK_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        raise HTTPException(502, f"the WhatsApp channel at {cfg.public_base_url} is not reachable: {exc}") from exc


# --- State and time travel ----------------------------------------------------------------------------------


def _offset_clock(cfg: Settings) -> OffsetFileClock | None:
    return OffsetFileClock(cfg.clock_offset_file) if cfg.clock_offset_file else None


def _state() -> dict[str, Any]:
    cfg = settings()
    clock = _offset_clock(cfg)
    return {
        "now": now().isoformat(),
        "offset_seconds": clock.offset_seconds() if clock else 0.0,
        "time_travel": clock is not None,
        "sandbox": not cfg.twilio_enabled,
        "business_number": cfg.twilio_whatsapp_from,
        "welcome_delay_seconds": cfg.welcome_delay_seconds,
        "default_timezone": leads.DEFAULT_TIMEZONE,
    }


@api.get("/state")
def state() -> dict[str, Any]:
    """The simulated current time (every process's `clock.now()`) and what the page needs to know."""
    return _state()


class Advance(StrictModel):
    seconds: int = Field(gt=0, le=MAX_ADVANCE_SECONDS, description="How far to move every process's clock forward")


@api.post("/clock/advance")
def advance_clock(body: Advance) -> dict[str, Any]:
    """Skip ahead: every process reads the offset file, so due tasks fire at their next scheduler poll."""
    clock = _offset_clock(settings())
    if clock is None:
        raise HTTPException(409, "time travel needs LEADBOT_CLOCK_OFFSET_FILE (scripts/run sets it)")
    with _clock_lock:
        clock.advance(body.seconds)
    logger.info("simulator clock advanced by %s s", body.seconds)
    return _state()


# --- Leads --------------------------------------------------------------------------------------------------


class ContactView(BaseModel):
    id: int
    first_name: str | None
    whatsapp_e164: str
    timezone: str
    consent_status: str
    created_at: datetime


def _contact_view(contact: Contact) -> ContactView:
    return ContactView.model_validate(contact, from_attributes=True)


@api.get("/contacts", response_model=list[ContactView])
def list_contacts(limit: int = Query(50, ge=1, le=500), session: Session = Depends(db_session)) -> list[ContactView]:
    """The newest contacts, to open their chats again."""
    rows = session.execute(select(Contact).order_by(Contact.id.desc()).limit(limit)).scalars()
    return [_contact_view(contact) for contact in rows]


class SimulatedOptIn(StrictModel):
    whatsapp_e164: Annotated[str, Field(pattern=NO_NUL, max_length=40)]
    first_name: Annotated[str, Field(pattern=NO_NUL, max_length=100)] | None = None
    timezone: Annotated[str, Field(pattern=NO_NUL, max_length=64)] = leads.DEFAULT_TIMEZONE


@api.post("/leads", status_code=201)
def create_lead(body: SimulatedOptIn, session: Session = Depends(db_session)) -> dict[str, Any]:
    """The opt-in form of a landing page, as `POST /leads` records it (consent source `simulator`)."""
    try:
        result = leads.opt_in(
            session,
            leads.OptInData(
                whatsapp_e164=body.whatsapp_e164,
                first_name=body.first_name,
                timezone=body.timezone,
                consent_source=CONSENT_SOURCE,
                consent_text_version=CONSENT_SOURCE,
                consent_timestamp=now(),
            ),
        )
    except leads.InvalidOptIn as exc:
        raise HTTPException(422, detail=[{"loc": ["body", exc.field], "msg": exc.reason, "type": "value_error"}]) \
            from None
    contact = session.get(Contact, result.contact_id)
    return {
        "contact": _contact_view(contact).model_dump(mode="json"),
        "conversation_id": result.conversation_id,
        "welcome_run_at": result.welcome_run_at.isoformat(),
        "welcome_scheduled": result.welcome_scheduled,
    }


# --- Chat ---------------------------------------------------------------------------------------------------


class SimulatedInbound(StrictModel):
    contact_id: DbId
    text: Annotated[str, Field(pattern=NO_NUL, max_length=4096)] = ""
    button_payload: Annotated[str, Field(pattern=NO_NUL, max_length=256)] = ""
    button_text: Annotated[str, Field(pattern=NO_NUL, max_length=256)] = ""

    @model_validator(mode="after")
    def _something(self) -> SimulatedInbound:
        if not self.text.strip() and not self.button_payload:
            raise ValueError("give a text or a button_payload")
        return self


@api.post("/send")
def send(body: SimulatedInbound, session: Session = Depends(db_session)) -> dict[str, Any]:
    """What the lead types or taps, posted to the channel exactly as Twilio would (signed, fresh MessageSid)."""
    cfg = settings()
    contact = get_contact_or_404(session, body.contact_id)
    text = body.text.strip() or body.button_text or body.button_payload
    params = inbound_params(cfg, contact, text, body.button_payload, body.button_text)
    session.commit()  # end the read transaction: the channel writes this message while we wait for its answer
    response = post_signed(cfg, INBOUND_PATH, params)
    if response.status_code >= 300:
        raise HTTPException(502, f"the WhatsApp channel answered {response.status_code}")
    logger.info("simulator inbound %s from %s", params["MessageSid"], phone.mask(contact.whatsapp_e164))
    return {"message_sid": params["MessageSid"], "status_code": response.status_code}


class MessageView(BaseModel):
    id: int
    direction: str
    sender_role: str
    message_type: str
    content: str | None
    template_name: str | None
    buttons: list[dict[str, str]]
    media_url: str | None
    delivery_status: str
    error_code: str | None
    created_at: datetime
    send_at: datetime | None
    sent_at: datetime | None
    processed: bool
    message_sid: str | None = Field(description="Inbound only: Twilio's MessageSid, to match the page's own sends")


class MessageUpdate(BaseModel):
    """What changes after a message was first shown (same JSON encoding as `MessageView`, so the page can compare)."""

    id: int
    delivery_status: str
    error_code: str | None
    sent_at: datetime | None
    processed: bool


def _message_view(message: Message) -> MessageView:
    payload = message.payload_json or {}
    inbound = message.direction == "inbound"
    return MessageView(
        id=message.id,
        direction=message.direction,
        sender_role=message.sender_role,
        message_type=message.message_type,
        content=message.content,
        template_name=message.template_name,
        buttons=[] if inbound else [dict(b) for b in payload.get("buttons") or [] if isinstance(b, dict)],
        media_url=payload.get("media_url") if not inbound else None,
        delivery_status=message.delivery_status,
        error_code=message.error_code,
        created_at=message.created_at,
        send_at=message.send_at,
        sent_at=message.sent_at,
        processed=message.processed_at is not None,
        message_sid=message.provider_message_id if inbound else None,
    )


@api.get("/conversations/{contact_id}/messages")
def messages(
    contact_id: Annotated[int, Path(gt=0, le=2**31 - 1)],
    after: int = Query(0, ge=0, le=2**31 - 1, description="Only messages with a larger id (the page's last one)"),
    session: Session = Depends(db_session),
) -> dict[str, Any]:
    """The lead's chat across their conversations: new messages after `after`, fresh ticks of the older ones,
    and what the scheduler has pending for them (so a tester knows how far to skip ahead)."""
    contact = get_contact_or_404(session, contact_id)
    of_contact = Message.conversation_id.in_(select(Conversation.id).where(Conversation.contact_id == contact.id))
    new = session.execute(
        select(Message).where(of_contact, Message.id > after).order_by(Message.id).limit(PAGE_SIZE)
    ).scalars()
    # Ticks and "processed" change after a message was first shown: refresh the recent ones the page has.
    older = session.execute(
        select(Message).where(of_contact, Message.id <= after).order_by(Message.id.desc()).limit(PAGE_SIZE)
    ).scalars()
    pending = session.execute(
        select(TaskScheduled.task_type, TaskScheduled.run_at)
        .join(Conversation, Conversation.id == TaskScheduled.conversation_id)
        .where(Conversation.contact_id == contact.id, TaskScheduled.status.in_(("pending", "running")))
        .order_by(TaskScheduled.run_at)
    ).all()
    return {
        "now": now().isoformat(),
        "contact": _contact_view(contact).model_dump(mode="json"),
        "messages": [_message_view(message).model_dump(mode="json") for message in new],
        "updates": [
            MessageUpdate(
                id=m.id, delivery_status=m.delivery_status, error_code=m.error_code, sent_at=m.sent_at,
                processed=m.processed_at is not None,
            ).model_dump(mode="json")
            for m in older
        ],
        "pending_tasks": [{"task_type": task_type, "run_at": run_at.isoformat()} for task_type, run_at in pending],
    }


class ReadReceipt(StrictModel):
    contact_id: DbId
    message_ids: list[DbId] = Field(min_length=1, max_length=PAGE_SIZE)


@api.post("/read")
def mark_read(body: ReadReceipt, session: Session = Depends(db_session)) -> dict[str, Any]:
    """The lead has seen these messages: post Twilio's signed `read` status callback for each one delivered."""
    cfg = settings()
    contact = get_contact_or_404(session, body.contact_id)
    rows = session.execute(
        select(Message.id, Message.provider_message_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.contact_id == contact.id,
            Message.id.in_(body.message_ids),
            Message.direction == "outbound",
            Message.provider_message_id.is_not(None),
            # WhatsApp reports "read" only for what reached the phone.
            Message.delivery_status == "delivered",
        )
    ).all()
    session.commit()  # the channel updates these rows while we post; hold no snapshot meanwhile
    read = []
    for message_id, sid in rows:
        if post_signed(cfg, STATUS_CALLBACK_PATH, read_params(cfg, contact, sid)).status_code < 300:
            read.append(message_id)
    return {"read": read}


router.include_router(api)
