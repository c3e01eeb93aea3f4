"""Scheduler test helpers: a recording fake of Rasa's trigger_intent API, leads, and moving the clock.

The fake is faithful to Rasa 3.6's `POST /conversations/{conversation_id}/trigger_intent`: the token is the
`token` query parameter (401 `NotAuthenticated` without it), the body is `{"name", "entities"}` (400 without a
name), an intent missing from the domain is a 404, and a success is 200 with `{"tracker": {...}}`. Optionally it
plays the action server + channel for a scheduled intent: it runs `tasks.message_for_fire` (what
`action_send_scheduled_template` does) and hands the result to `outbound.enqueue` (what the channel does).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from leadbot.clock import FrozenClock
from leadbot.config import settings
from leadbot.db.models import Appointment, Contact, Conversation, Message, TaskScheduled
from leadbot.domain.policy import Purpose
from leadbot.services import outbound, tasks

TOKEN = "test-rasa-token"
DOMAIN_INTENTS = {f"EXTERNAL_{name}" for name in (*tasks.MARKETING_TASK_TYPES, "handover_sla", "resume")}


@dataclass(frozen=True)
class Trigger:
    sender_id: str
    intent: str
    entities: dict[str, Any]
    output_channel: str | None


@dataclass
class FakeRasa:
    url: str
    calls: list[Trigger] = field(default_factory=list)
    # Status codes to answer with before succeeding again (to simulate outages), consumed one per request.
    failures: list[int] = field(default_factory=list)
    on_trigger: Callable[[Trigger], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def intents(self) -> list[str]:
        return [call.intent for call in self.calls]


def _rasa_error(status: int, reason: str, message: str) -> dict[str, Any]:
    return {"version": "3.6.21", "status": "failure", "message": message, "reason": reason, "details": {},
            "help": None, "code": status}


def rasa_handler(fake: FakeRasa) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            parsed = urlparse(self.path)
            query = parse_qs(parsed.query)
            parts = parsed.path.strip("/").split("/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if len(parts) != 3 or parts[0] != "conversations" or parts[2] != "trigger_intent":
                return self._json(404, _rasa_error(404, "NotFound", "not found"))
            if query.get("token", [""])[0] != TOKEN:
                return self._json(401, _rasa_error(401, "NotAuthenticated", "User is not authenticated."))
            body = json.loads(raw or b"{}")
            name = body.get("name")
            if not name:
                return self._json(400, _rasa_error(400, "BadRequest", "Name of the intent not provided in request"))
            if name not in DOMAIN_INTENTS:
                return self._json(404, _rasa_error(404, "NotFound", f"The intent {name} does not exist"))
            with fake.lock:
                if fake.failures:
                    status = fake.failures.pop(0)
                    return self._json(status, _rasa_error(status, "ConversationError", "simulated failure"))
                trigger = Trigger(parts[1], name, body.get("entities") or {}, query.get("output_channel", [None])[0])
                fake.calls.append(trigger)
            if fake.on_trigger is not None:
                fake.on_trigger(trigger)
            tracker = {"sender_id": parts[1], "slots": {"task_id": trigger.entities.get("task_id")},
                       "latest_message": {"intent": {"name": name, "confidence": 1.0}}, "events": []}
            return self._json(200, {"tracker": tracker})

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    return Handler


def send_like_action(session: Session, task_id: int) -> outbound.OutboundResult | None:
    """What Rasa does for a scheduled intent: the action picks the template, the channel enqueues it."""
    message = tasks.message_for_fire(session, task_id)
    if message is None:
        return None
    task = session.get(TaskScheduled, task_id)
    conversation = session.get(Conversation, task.conversation_id)
    return outbound.enqueue(
        session,
        conversation,
        template_name=message.template,
        variables=message.variables,
        deadline=message.deadline,
        purpose=Purpose(message.purpose),
    )


def action_side(engine: Engine) -> Callable[[Trigger], None]:
    def run(trigger: Trigger) -> None:
        with Session(engine, future=True, expire_on_commit=False) as session:
            send_like_action(session, int(trigger.entities["task_id"]))
            session.commit()

    return run


def make_lead(
    session: Session,
    e164: str = "+4915112345678",
    *,
    first_name: str | None = "Lena",
    tz: str = "Europe/Berlin",
    consent: str = "granted",
    status: str = "open",
    at: datetime,
) -> Conversation:
    contact = Contact(whatsapp_e164=e164, first_name=first_name, timezone=tz, consent_status=consent,
                      consent_source="test", consent_text_version="v1", consent_timestamp=at, created_at=at,
                      updated_at=at)
    session.add(contact)
    session.flush()
    conversation = Conversation(contact_id=contact.id, status=status, created_at=at, updated_at=at)
    session.add(conversation)
    session.flush()
    return conversation


def lead_writes(session: Session, conversation: Conversation, at: datetime, text: str = "Ja") -> None:
    """What the inbound path records for a lead message (the parts the scheduler and the gate depend on)."""
    session.add(Message(conversation_id=conversation.id, direction="inbound", content=text, created_at=at,
                        delivery_status="delivered", sender_role="human", processed_at=at))
    conversation.last_inbound_at = at
    conversation.service_window_expires_at = at + timedelta(hours=settings().service_window_hours)
    tasks.after_lead_message(session, conversation)


def book(session: Session, conversation: Conversation, starts_at: datetime, link: str = "https://meet.example/x"
         ) -> Appointment:
    appointment = Appointment(conversation_id=conversation.id, starts_at=starts_at,
                              ends_at=starts_at + timedelta(minutes=30), meeting_link=link, status="booked")
    session.add(appointment)
    session.flush()
    tasks.on_booked(session, conversation, appointment)
    return appointment


def next_due(engine: Engine) -> datetime | None:
    with Session(engine, future=True) as session:
        return session.execute(
            select(func.min(TaskScheduled.run_at)).where(TaskScheduled.status == "pending")
        ).scalar_one_or_none()


def run_until(clock: FrozenClock, firer: Any, engine: Engine, until: datetime) -> None:
    """Jump the clock from one due task to the next up to `until`, letting the worker fire at each stop."""
    while True:
        due = next_due(engine)
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=until.tzinfo)
        if due is None or due > until:
            clock.set(max(clock.now(), until))
            firer.run_once()
            return
        clock.set(max(clock.now(), due))
        firer.run_once()


def bulk_due_tasks(engine: Engine, count: int, at: datetime, task_type: str = "nudge_30m") -> list[int]:
    """`count` leads with one due task each, inserted in bulk (setup speed for the load tests)."""
    with Session(engine, future=True, expire_on_commit=False) as session:
        contacts = [
            Contact(whatsapp_e164=f"+49151{index:08d}", first_name="Lena", timezone="Europe/Berlin",
                    consent_status="granted", created_at=at, updated_at=at)
            for index in range(count)
        ]
        session.add_all(contacts)
        session.flush()
        conversations = [Conversation(contact_id=c.id, created_at=at, updated_at=at) for c in contacts]
        session.add_all(conversations)
        session.flush()
        rows = [TaskScheduled(conversation_id=c.id, task_type=task_type, run_at=at, status="pending", attempts=0,
                              created_at=at, updated_at=at) for c in conversations]
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows]
