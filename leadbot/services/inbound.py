"""What arrives from Twilio: inbound WhatsApp messages and delivery status callbacks (issue 3 points 2-8).

Inbound messages are persisted before anything else and deduplicated atomically by the unique constraint
`(channel, provider_message_id)`: the insert runs in a savepoint and an `IntegrityError` means "seen before"
(never check-then-insert). Each row stays unprocessed (`processed_at IS NULL`) until its dialogue turn has been
committed together with the turn's replies, so a crash between the webhook's ack and the turn loses nothing.

The channel (`leadbot.channel.whatsapp`) runs the turns; this module is the synchronous database side.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadbot import phone
from leadbot.clock import now as clock_now
from leadbot.config import settings
from leadbot.db.models import Contact, Conversation, Message
from leadbot.services import contacts

logger = logging.getLogger(__name__)

CHANNEL = "whatsapp"
# How many recent outbound messages are searched for the buttons a `ButtonPayload` may come from.
_BUTTON_LOOKBACK = 20
# SQLite (embedded default, one process): writers of one contact are serialised in-process.
_SQLITE_WRITE_LOCK = threading.Lock()
_SID = re.compile(r"[A-Za-z0-9_-]{2,64}")


class InvalidInbound(ValueError):
    """A signed webhook we cannot make sense of (no MessageSid, no sender number)."""


@dataclass(frozen=True)
class InboundForm:
    """The Twilio form fields of an inbound WhatsApp message (direct number or Messaging Service webhook)."""

    message_sid: str
    from_e164: str
    body: str
    to: str = ""
    account_sid: str = ""
    messaging_service_sid: str = ""
    profile_name: str = ""
    wa_id: str = ""
    button_payload: str = ""
    button_text: str = ""
    num_media: int = 0
    media: list[dict[str, str]] = field(default_factory=list)
    latitude: str = ""
    longitude: str = ""

    @property
    def is_media(self) -> bool:
        return self.num_media > 0 or bool(self.media) or bool(self.latitude and self.longitude)


def _first(form: Mapping[str, Any], name: str) -> str:
    """A form field as text without control characters (PostgreSQL rejects NUL; nothing else needs them)."""
    value = form.get(name)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    if value is None:
        return ""
    return "".join(ch for ch in str(value) if ch in "\n\t" or unicodedata.category(ch) != "Cc")


def normalize_text(text: str) -> str:
    """NFC-normalise and trim; drops NUL and other control characters except newlines and tabs."""
    text = unicodedata.normalize("NFC", text or "")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    return text.strip()


def neutralize(text: str) -> str:
    """Text for Rasa from what a lead typed: a leading `/` would force an intent (`/stop{...}`), so it goes."""
    text = normalize_text(text)
    while text.startswith("/"):
        text = text[1:].lstrip()
    return text


def parse_form(form: Mapping[str, Any]) -> InboundForm:
    sid = _first(form, "MessageSid") or _first(form, "SmsMessageSid") or _first(form, "SmsSid")
    if not _SID.fullmatch(sid):
        raise InvalidInbound("no valid MessageSid")
    raw_from = _first(form, "From")
    wa_id = _first(form, "WaId")
    e164 = None
    for candidate in (raw_from, f"+{wa_id}" if wa_id and not wa_id.startswith("+") else wa_id):
        if not candidate:
            continue
        try:
            e164 = phone.normalize_e164(candidate)
            break
        except phone.InvalidPhoneNumber:
            continue
    if e164 is None:
        raise InvalidInbound("no valid sender number")
    try:
        num_media = max(0, int(_first(form, "NumMedia") or 0))
    except ValueError:
        num_media = 0
    media = []
    for index in range(min(num_media, 10)):
        url = _first(form, f"MediaUrl{index}")
        if url:
            media.append({"url": url, "content_type": _first(form, f"MediaContentType{index}")})
    return InboundForm(
        message_sid=sid,
        from_e164=e164,
        body=normalize_text(_first(form, "Body")),
        to=_first(form, "To"),
        account_sid=_first(form, "AccountSid"),
        messaging_service_sid=_first(form, "MessagingServiceSid"),
        profile_name=normalize_text(_first(form, "ProfileName"))[:100],
        wa_id=wa_id,
        button_payload=normalize_text(_first(form, "ButtonPayload")),
        button_text=normalize_text(_first(form, "ButtonText")),
        num_media=num_media,
        media=media,
        latitude=_first(form, "Latitude"),
        longitude=_first(form, "Longitude"),
    )


@dataclass(frozen=True)
class PersistResult:
    duplicate: bool
    message_id: int | None = None
    conversation_id: int | None = None


def message_type_of(form: InboundForm) -> str:
    if form.is_media:
        return "media"
    if form.button_payload or form.button_text:
        return "interactive"
    return "text"


def persist(session: Session, form: InboundForm) -> PersistResult:
    """Persist one inbound message (the caller commits). A redelivered MessageSid returns `duplicate=True`.

    Writers of one contact are serialised (row lock on the contact), so message ids of a conversation are in
    arrival order and two first messages of a new contact cannot open two conversations.
    """
    from leadbot.db.session import is_sqlite

    bind = session.get_bind()
    if is_sqlite(str(bind.url)):
        with _SQLITE_WRITE_LOCK:
            return _persist(session, form)
    return _persist(session, form)


def _persist(session: Session, form: InboundForm) -> PersistResult:
    current = clock_now()
    contact = contacts.get_or_create_contact(session, form.from_e164, form.profile_name or None)
    session.execute(select(Contact.id).where(Contact.id == contact.id).with_for_update())
    conversation = contacts.current_conversation(session, contact, lock=True)
    payload: dict[str, Any] = {}
    for key in ("button_payload", "button_text", "profile_name", "messaging_service_sid", "latitude", "longitude"):
        value = getattr(form, key)
        if value:
            payload[key] = value
    if form.media:
        payload["media"] = form.media
    message = Message(
        conversation_id=conversation.id,
        direction="inbound",
        channel=CHANNEL,
        provider_message_id=form.message_sid,
        message_type=message_type_of(form),
        content=form.body or form.button_text or "",
        delivery_status="delivered",
        sender_role="human",
        payload_json=payload or None,
        created_at=current,
    )
    try:
        with session.begin_nested():
            session.add(message)
    except IntegrityError:
        session.rollback()
        return PersistResult(duplicate=True)
    conversation.last_inbound_at = current
    conversation.service_window_expires_at = current + timedelta(hours=settings().service_window_hours)
    conversation.updated_at = current
    session.flush()
    call_task_hook("after_lead_message", session, conversation)
    return PersistResult(duplicate=False, message_id=message.id, conversation_id=conversation.id)


def call_task_hook(name: str, *args: Any, **kwargs: Any) -> None:
    """Call a scheduler hook in `leadbot.services.tasks` (the scheduler feature owns that module)."""
    try:
        from leadbot.services import tasks
    except ImportError:  # pragma: no cover - only while the scheduler feature is not installed
        logger.warning("leadbot.services.tasks missing: hook %s skipped", name)
        return
    getattr(tasks, name)(*args, **kwargs)


# --- The turn runner's queries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingInbound:
    """One unprocessed inbound message with everything the turn runner needs to decide what to do."""

    message_id: int
    conversation_id: int
    contact_id: int
    sender_id: str
    provider_message_id: str
    message_type: str
    text: str  # what the lead wrote (normalised); opt-out words are matched on this
    rasa_text: str  # what Rasa gets: neutralised, or the intent of a button we generated
    owner: str
    attempts: int
    caption: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def next_unprocessed(session: Session, conversation_id: int) -> PendingInbound | None:
    message = session.execute(
        select(Message)
        .where(
            Message.conversation_id == conversation_id,
            Message.direction == "inbound",
            Message.processed_at.is_(None),
        )
        .order_by(Message.id)
        .limit(1)
    ).scalar_one_or_none()
    if message is None:
        return None
    conversation = session.get(Conversation, conversation_id)
    contact = conversation.contact
    payload = message.payload_json or {}
    text = normalize_text(message.content or "")
    rasa_text = button_intent(session, conversation_id, payload.get("button_payload"), text, message.id)
    return PendingInbound(
        message_id=message.id,
        conversation_id=conversation_id,
        contact_id=contact.id,
        sender_id=phone.sender_id_for(contact.whatsapp_e164),
        provider_message_id=message.provider_message_id or str(message.id),
        message_type=message.message_type,
        text=text,
        rasa_text=rasa_text,
        owner=conversation.owner,
        attempts=message.attempts or 0,
        caption=neutralize(text) if message.message_type == "media" else "",
        metadata={"inbound_message_id": message.id, "conversation_id": conversation_id},
    )


def button_intent(
    session: Session, conversation_id: int, button_payload: str | None, text: str, before_id: int | None = None
) -> str:
    """Map a button reply to what the button meant; only payloads WE sent may force an intent.

    The allowlist is the buttons stored on this conversation's recent outbound messages (`payload_json.buttons`).
    A `ButtonPayload` not found there is treated like typed text (neutralised). A typed reply that equals a
    button title of the latest message with buttons is mapped the same way.
    """
    query = (
        select(Message.payload_json)
        .where(
            Message.conversation_id == conversation_id,
            Message.direction == "outbound",
            Message.payload_json.isnot(None),
        )
        .order_by(Message.id.desc())
        .limit(_BUTTON_LOOKBACK)
    )
    if before_id is not None:
        query = query.where(Message.id < before_id)
    recent = [row for row in session.execute(query).scalars() if isinstance(row, dict) and row.get("buttons")]
    if button_payload:
        for payload in recent:
            for button in payload.get("buttons") or []:
                if not isinstance(button, dict):
                    continue
                ids = {str(button.get(key)) for key in ("payload", "id") if button.get(key)}
                if button_payload in ids:
                    return str(button.get("payload") or button.get("title") or "")
        return neutralize(text or button_payload)
    if recent and text:
        wanted = text.casefold()
        for button in recent[0].get("buttons") or []:
            if isinstance(button, dict) and str(button.get("title", "")).strip().casefold() == wanted:
                return str(button.get("payload") or button.get("title"))
    return neutralize(text)


def mark_processed(session: Session, message_id: int, error_code: str | None = None) -> bool:
    """Mark an inbound message processed; False when it already was (another runner finished it)."""
    values: dict[str, Any] = {"processed_at": clock_now()}
    if error_code:
        values["error_code"] = error_code
    result = session.execute(
        update(Message)
        .where(Message.id == message_id, Message.processed_at.is_(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def lock_unprocessed(session: Session, message_id: int) -> Message | None:
    """The inbound row, locked for the finishing transaction; None when it is already processed."""
    message = session.execute(select(Message).where(Message.id == message_id).with_for_update()).scalar_one_or_none()
    if message is None or message.processed_at is not None:
        return None
    return message


def record_failed_attempt(session: Session, message_id: int) -> int:
    message = session.get(Message, message_id)
    message.attempts = (message.attempts or 0) + 1
    return message.attempts


def has_unprocessed(session: Session, conversation_id: int) -> bool:
    return (
        session.execute(
            select(Message.id)
            .where(
                Message.conversation_id == conversation_id,
                Message.direction == "inbound",
                Message.processed_at.is_(None),
            )
            .limit(1)
        ).first()
        is not None
    )


def conversations_with_unprocessed(session: Session, older_than: datetime) -> list[int]:
    """Conversations whose oldest unprocessed inbound message arrived before `older_than`, oldest first."""
    rows = session.execute(
        select(Message.conversation_id, Message.id)
        .where(
            Message.direction == "inbound",
            Message.processed_at.is_(None),
            Message.created_at < older_than,
        )
        .order_by(Message.id)
    ).all()
    seen: dict[int, None] = {}
    for conversation_id, _ in rows:
        seen.setdefault(conversation_id, None)
    return list(seen)


# --- Delivery status callbacks (issue 3 point 8) ----------------------------------------------------------------

# Twilio's message statuses mapped to ours.
TWILIO_STATUS_MAP = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "undelivered": "failed",
    "canceled": "failed",
}
_RANK = {"queued": 0, "sent": 1, "delivered": 2, "read": 3}
OPTED_OUT_ERROR_CODES = {"21610", "63032"}


def status_transition(current: str, incoming: str) -> bool:
    """May a callback move `current` to `incoming`? Never backwards: read > delivered > sent > queued.

    `failed` may replace queued/sent (the message never arrived) but not delivered/read; nothing leaves failed.
    """
    if current == incoming:
        return False
    if current == "failed":
        return False
    if incoming == "failed":
        return current in ("queued", "sent")
    return _RANK.get(incoming, -1) > _RANK.get(current, -1)


@dataclass(frozen=True)
class StatusResult:
    found: bool
    applied: bool
    status: str | None
    opted_out_contact_id: int | None = None


def apply_status(session: Session, form: Mapping[str, Any]) -> StatusResult:
    """Apply one status callback (the caller commits). Unknown message ids and statuses are ignored."""
    sid = _first(form, "MessageSid") or _first(form, "SmsSid")
    raw_status = (_first(form, "MessageStatus") or _first(form, "SmsStatus")).strip().lower()
    error_code = _first(form, "ErrorCode").strip() or None
    incoming = TWILIO_STATUS_MAP.get(raw_status)
    if not sid:
        return StatusResult(found=False, applied=False, status=None)
    message = session.execute(
        select(Message).where(Message.channel == CHANNEL, Message.provider_message_id == sid).with_for_update()
    ).scalar_one_or_none()
    if message is None:
        return StatusResult(found=False, applied=False, status=incoming)
    applied = False
    if incoming is not None and status_transition(message.delivery_status, incoming):
        message.delivery_status = incoming
        applied = True
        if error_code:
            message.error_code = error_code[:64]
    opted_out = None
    if error_code in OPTED_OUT_ERROR_CODES:
        opted_out = session.get(Conversation, message.conversation_id).contact_id
    return StatusResult(found=True, applied=applied, status=message.delivery_status, opted_out_contact_id=opted_out)
